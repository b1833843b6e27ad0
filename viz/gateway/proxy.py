"""HTTP and websocket reverse proxy from the gateway to viz servers.

Written against the list in ``shared/notes/proxy-pitfalls.md`` and measured
against configurable-http-proxy (``benchmarks/gateway.py``):

- HTTP goes through :mod:`~prefect_hpcviz.viz.gateway.http_upstream`: keep-alive
  connections without a limit on their number, no total timeout, redirects and
  cookies passed through, hop-by-hop headers dropped both ways, nothing added
  and nothing decompressed, the raw path and query byte for byte, bodies
  streamed both ways. A response that has fully arrived with its head (most
  of a viz app's requests) is answered in one write; a larger Content-Length
  body goes from the one read buffer the event loop reads into
  (:mod:`~prefect_hpcviz.viz.gateway.read_buffer`) straight to the browser's
  socket, in the read callback: no copy, no task step per read, and reading
  from the viz server pauses while the browser's socket is full.
- Websockets: the gateway connects to the viz server first, then accepts the
  browser with the subprotocol the server chose; after that
  :class:`~prefect_hpcviz.viz.gateway.ws_relay.WebSocketRelay` passes frames
  through as bytes (no per-message work, no compression, close codes and
  reasons as sent, a vanished peer closes the other side at once).

The proxy knows nothing about sessions or authentication: the caller checks
the request, gives the target URL and a callback to note activity. It counts
the bytes it moves in a :class:`~prefect_hpcviz.viz.gateway.metrics.Traffic`
(integer additions only).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Callable, Iterable

from aiohttp import web
from yarl import URL

from prefect_hpcviz.viz.gateway.http_upstream import (
    HOP_BY_HOP,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    connection_tokens,
    request_head,
)
from prefect_hpcviz.viz.gateway.metrics import Traffic
from prefect_hpcviz.viz.gateway.ws_relay import FrameTransform, WebSocketRelay

__all__ = ["BackendUnavailable", "FrameTransform", "HOP_BY_HOP", "ReverseProxy", "build_target"]

log = logging.getLogger(__name__)

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)


class BackendUnavailable(Exception):
    """The viz server could not be reached; nothing was sent to the client yet."""


def build_target(host: str, port: int, raw_path: str, raw_query: str = "") -> URL:
    """The backend URL for an already-encoded path and query (kept byte for byte).

    Example:
        >>> str(build_target("127.0.0.1", 8080, "/a%2Fb%20c", "q=%2F"))
        'http://127.0.0.1:8080/a%2Fb%20c?q=%2F'
    """
    return URL.build(scheme="http", host=host, port=port, path=raw_path, query_string=raw_query, encoded=True)


def websocket_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` answer to a ``Sec-WebSocket-Key`` (RFC 6455, 4.2.2).

    Example:
        >>> websocket_accept("dGhlIHNhbXBsZSBub25jZQ==")
        's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    return base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()


def _close_if_failed(task: asyncio.Future, conn: UpstreamConnection) -> None:
    """Sending the body failed (the browser went away): stop waiting for the answer."""
    if not task.cancelled() and task.exception() is not None:
        conn.close()


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


class ReverseProxy:
    """Forwards requests and websockets to viz servers.

    Args:
        max_ws_message: largest websocket message, either direction (bytes).
        connect_timeout: seconds to wait for a backend to accept a connection.
        traffic: where proxied bytes are counted (default: a new Traffic).

    Example:
        >>> proxy = ReverseProxy()
        >>> # inside an aiohttp handler:
        >>> # return await proxy.http(request, build_target("127.0.0.1", port, "/index.html"))
    """

    def __init__(
        self,
        *,
        max_ws_message: int = 64 * 1024 * 1024,
        connect_timeout: float = 10.0,
        traffic: Traffic | None = None,
    ) -> None:
        self.max_ws_message = max_ws_message
        self.connect_timeout = connect_timeout
        self.traffic = traffic if traffic is not None else Traffic()
        self.pool = UpstreamPool(connect_timeout=connect_timeout)
        self._skip_cache: dict[tuple[str, ...], frozenset[bytes]] = {}

    async def close(self) -> None:
        """Close pooled connections."""
        self.pool.close()

    def _skip(self, request: web.BaseRequest, drop: Iterable[str]) -> frozenset[bytes]:
        """Request header names (lowercase bytes) not to forward: hop-by-hop, named in Connection, ``drop``."""
        key = drop if isinstance(drop, tuple) else tuple(drop)
        skip = self._skip_cache.get(key)
        if skip is None:
            # Expect: 100-continue was already answered by the gateway's own server.
            skip = self._skip_cache[key] = _HOP_BY_HOP_BYTES | {d.lower().encode() for d in (*key, "Expect")}
        named = connection_tokens(request.headers.get("Connection"))
        if named and not named <= HOP_BY_HOP:
            skip = skip | {t.encode("latin-1", "replace") for t in named}
        return skip

    async def _connect(self, host: str, port: int) -> UpstreamConnection:
        try:
            return await self.pool.acquire(host, port)
        except (OSError, asyncio.TimeoutError) as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, host: str, port: int, head: bytes, *, no_body: bool, send_body=None):
        """Write a request head (and body), wait for the response head.

        A kept-alive connection the viz server closed meanwhile is retried once
        on a new one when no body was sent. A browser that goes away while it
        sends the body ends the exchange with its own error (the viz server is
        fine). Returns (connection, head, body task).
        """
        for attempt in (0, 1):
            conn = await self._connect(host, port)
            reused = conn.used > 0
            conn.start(no_body=no_body)
            assert conn.transport is not None
            conn.transport.write(head)
            sender = None
            if send_body is not None:
                sender = asyncio.ensure_future(send_body(conn))
                sender.add_done_callback(lambda task, conn=conn: _close_if_failed(task, conn))
            try:
                return conn, await conn.head(), sender
            except BaseException as exc:
                conn.close()
                if sender is not None:
                    failed = sender.done() and not sender.cancelled() and sender.exception()
                    if failed and not isinstance(failed, UpstreamError):
                        raise failed from None
                    sender.cancel()
                if not isinstance(exc, UpstreamError):
                    raise
                if exc.before_head and reused and sender is None and attempt == 0:
                    continue
                if exc.before_head:
                    raise BackendUnavailable(str(exc)) from exc
                raise
        raise AssertionError("unreachable")

    # -------------------------------------------------------------------- http
    async def http(
        self,
        request: web.Request,
        target: URL,
        *,
        extra_headers: dict[str, str] | None = None,
        drop_request_headers: Iterable[str] = (),
        drop_set_cookie: Callable[[str], bool] | None = None,
        on_activity: Callable[[], None] = lambda: None,
    ) -> web.StreamResponse:
        """Forward one HTTP request and stream the answer back.

        Raises:
            BackendUnavailable: the backend refused or dropped the connection
                before answering (the caller shows a page instead).
        """
        host, port = target.raw_host or "", target.port or 80
        extra = list(extra_headers.items()) if extra_headers else []
        if "Host" not in request.headers:
            extra.append(("Host", f"{host}:{port}"))
        body = request.content if request.body_exists else None
        chunked = body is not None and request.content_length is None
        if chunked:
            extra.append(("Transfer-Encoding", "chunked"))
        skip = self._skip(request, drop_request_headers)
        head = b"".join(request_head(request.method, target.raw_path_qs, request.raw_headers, skip, extra))
        on_activity()

        async def send_body(conn: UpstreamConnection) -> None:
            assert body is not None and conn.transport is not None
            counted = self.traffic.http_to_backend
            while True:
                chunk, _ = await body.readchunk()  # one piece as the parser gave it (readany joins: a copy)
                if not chunk:
                    if body.at_eof():
                        break
                    continue  # the end of a chunk of a chunked upload
                counted.n += len(chunk)
                if chunked:
                    conn.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    conn.transport.write(chunk)
                await conn.drain()
            if chunked:
                conn.transport.write(b"0\r\n\r\n")

        try:
            conn, upstream, sender = await self._exchange(
                host, port, head, no_body=request.method == "HEAD", send_body=None if body is None else send_body
            )
        except UpstreamError as exc:
            return web.json_response({"error": str(exc)}, status=502)
        headers = upstream.headers
        if drop_set_cookie is not None:
            headers = [(n, v) for n, v in headers if n.lower() != "set-cookie" or not drop_set_cookie(v)]
        whole = conn.complete_body()
        if whole is not None and (sender is None or sender.done()):
            self._finish(conn, sender)
            self.traffic.http_to_client.n += len(whole)
            return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=whole or None)
        return await self._stream(request, conn, upstream.status, upstream.reason, headers, whole, sender, on_activity)

    async def _stream(self, request, conn, status, reason, headers, first, sender, on_activity) -> web.StreamResponse:
        """Send the response head, then the body as it arrives.

        A Content-Length body goes from the read buffer straight to the
        browser's socket (:meth:`UpstreamConnection.send_rest`); chunked bodies
        and bodies that end when the server closes are read and written here.
        """
        response = web.StreamResponse(status=status, reason=reason, headers=headers)
        sent = self.traffic.http_to_client
        try:
            writer = await response.prepare(request)
            first = first or conn.arrived()
            if first:
                await response.write(first)  # with the head, in one write
                sent.n += len(first)
            if conn.streams_to_browser and writer is not None and request.transport is not None:
                if not first and hasattr(writer, "send_headers"):
                    writer.send_headers()  # aiohttp >= 3.12 holds the head back until the first body write
                writer.output_size += await conn.send_rest(
                    request.transport, request.protocol, writer, sent, on_activity
                )
            else:
                while chunks := await conn.read():
                    for chunk in chunks:
                        await response.write(chunk)
                        sent.n += len(chunk)
                    on_activity()
            await response.write_eof()
        except (UpstreamError, ConnectionError) as exc:
            # Either side went away mid-body; the status line is out, so cut the connection.
            log.debug("proxied response cut short: %s", exc)
            conn.close()
            if request.transport is not None:
                request.transport.close()
        finally:
            self._finish(conn, sender)
        return response

    def _finish(self, conn: UpstreamConnection, sender: asyncio.Future | None) -> None:
        """Back to the pool if the exchange completed both ways; closed otherwise."""
        if sender is not None and (not sender.done() or sender.cancelled() or sender.exception()):
            sender.cancel()  # the viz server answered before reading the whole body
            conn.close()
        self.pool.release(conn)

    # --------------------------------------------------------------- websocket
    async def websocket(
        self,
        request: web.Request,
        target: URL,
        *,
        extra_headers: dict[str, str] | None = None,
        drop_request_headers: Iterable[str] = (),
        transform: FrameTransform | None = None,
        on_activity: Callable[[], None] = lambda: None,
        on_open: Callable[[WebSocketRelay], None] = lambda ws: None,
        on_close: Callable[[WebSocketRelay], None] = lambda ws: None,
    ) -> web.StreamResponse:
        """Connect to the backend first, then accept the client with the subprotocol it chose.

        ``on_open``/``on_close`` get the relay; ``await relay.close(code, reason)``
        closes both sides.

        Raises:
            BackendUnavailable: the backend could not be reached.
        """
        opened = await self._open_websocket(
            request, target, extra_headers, drop_request_headers, transform, on_activity
        )
        if isinstance(opened, web.StreamResponse):
            return opened
        response, relay = opened  # the handshakes' locals are gone: an idle websocket holds little
        on_open(relay)
        try:
            await relay.finished
        finally:
            on_close(relay)
            if not relay.finished.done():  # cancelled (gateway shutting down)
                relay.client.close()
                relay.backend.close()
        return response

    async def _open_websocket(
        self,
        request: web.Request,
        target: URL,
        extra_headers: dict[str, str] | None,
        drop_request_headers: Iterable[str],
        transform: FrameTransform | None,
        on_activity: Callable[[], None],
    ) -> web.StreamResponse | tuple[web.StreamResponse, WebSocketRelay]:
        """Both handshakes; an error response, or the 101 sent to the client and the relay."""
        key = request.headers.get("Sec-WebSocket-Key", "")
        if (
            request.headers.get("Sec-WebSocket-Version") != "13"
            or not _valid_key(key)
            or "upgrade" not in connection_tokens(request.headers.get("Connection"))
        ):
            needs = "Connection: Upgrade, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key"
            return web.json_response({"error": f"not a websocket handshake ({needs} are needed)"}, status=400)
        host, port = target.raw_host or "", target.port or 80
        extra = list(extra_headers.items()) if extra_headers else []
        if "Host" not in request.headers:
            extra.append(("Host", f"{host}:{port}"))
        backend_key = base64.b64encode(os.urandom(16)).decode()
        extra += [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", backend_key),
            ("Sec-WebSocket-Version", "13"),
        ]
        protocols = request.headers.get("Sec-WebSocket-Protocol", "").strip()
        if protocols:
            extra.append(("Sec-WebSocket-Protocol", protocols))
        skip = self._skip(request, drop_request_headers)
        forwarded = [(n, v) for n, v in request.raw_headers if not n.lower().startswith(b"sec-websocket-")]
        head = b"".join(request_head("GET", target.raw_path_qs, forwarded, skip, extra))
        on_activity()
        try:
            conn, upstream, _ = await self._exchange(host, port, head, no_body=True)
        except UpstreamError as exc:
            return web.json_response({"error": f"the viz server refused the websocket ({exc})"}, status=502)
        answer = {name.lower(): value for name, value in upstream.headers}
        if upstream.status != 101:
            conn.close()
            return web.json_response(
                {"error": f"the viz server refused the websocket ({upstream.status} {upstream.reason})"},
                status=upstream.status if 400 <= upstream.status < 600 else 502,
            )
        if answer.get("sec-websocket-accept") != websocket_accept(backend_key) or "sec-websocket-extensions" in answer:
            conn.close()
            return web.json_response({"error": "the viz server answered the websocket handshake wrongly"}, status=502)
        chosen = answer.get("sec-websocket-protocol")
        response = web.StreamResponse(
            status=101,
            headers=[
                ("Upgrade", "websocket"),
                ("Connection", "upgrade"),
                ("Sec-WebSocket-Accept", websocket_accept(key)),
                *([("Sec-WebSocket-Protocol", chosen)] if chosen else []),
            ],
        )
        response.force_close()
        try:
            writer = await response.prepare(request)
        except BaseException:
            conn.close()
            raise
        client, protocol = request.transport, request.protocol
        if client is None or client.is_closing() or writer is None or conn.transport is None:
            conn.close()
            return response
        relay = WebSocketRelay(
            client,
            protocol,
            writer,
            conn.transport,
            transform=transform,
            on_activity=on_activity,
            to_backend=self.traffic.ws_to_backend,
            to_client=self.traffic.ws_to_client,
            max_message=self.max_ws_message,
        )
        conn.transport.set_protocol(relay)
        if conn.tail:
            relay.data_received(conn.tail)
        if conn.closed:
            relay.connection_lost(None)
        conn.hand_over()
        protocol.set_parser(relay)  # the browser's bytes now go to the relay
        protocol.keep_alive(False)
        return response, relay
