"""HTTP and websocket reverse proxy from the gateway to viz servers.

Written against the list in ``shared/notes/proxy-pitfalls.md``: one
unlimited connection pool, no total timeout, redirects and cookies passed
through untouched, hop-by-hop headers dropped both ways, bytes not
re-encoded, raw paths, streamed bodies, websocket subprotocols, 64 MiB
messages, no compression, and close codes carried across.

The proxy knows nothing about sessions or authentication: the caller gives it
the request, the target URL and a callback to note activity. It counts the
bytes it moves in a :class:`~prefect_hpcviz.viz.gateway.metrics.Traffic`
(integer additions only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from prefect_hpcviz.viz.gateway.metrics import ByteCount, Traffic

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Close codes that must never be sent on the wire (RFC 6455, 7.4.1), and what goes instead.
_NOT_SENDABLE = {1005: 1000, 1006: 1001, 1015: 1011}


class BackendUnavailable(Exception):
    """The viz server could not be reached; nothing was sent to the client yet."""


class FrameTransform(Protocol):
    """Rewrites client->backend binary frames (see wslink_auth.HelloSecretInjector)."""

    done: bool

    def feed(self, frame: bytes) -> list[bytes]: ...


def build_target(host: str, port: int, raw_path: str, raw_query: str = "") -> URL:
    """The backend URL for an already-encoded path and query (kept byte for byte).

    Example:
        >>> str(build_target("127.0.0.1", 8080, "/a%2Fb%20c", "q=%2F"))
        'http://127.0.0.1:8080/a%2Fb%20c?q=%2F'
    """
    return URL.build(scheme="http", host=host, port=port, path=raw_path, query_string=raw_query, encoded=True)


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def end_to_end(
    headers: "CIMultiDict[str] | Iterable[tuple[str, str]]", drop: Iterable[str] = ()
) -> CIMultiDict:
    """Copy headers without hop-by-hop ones (and those named in Connection or ``drop``)."""
    items = list(headers.items()) if hasattr(headers, "items") else list(headers)
    skip = HOP_BY_HOP | _connection_tokens(items) | {d.lower() for d in drop}
    out: CIMultiDict = CIMultiDict()
    for name, value in items:
        if name.lower() not in skip:
            out.add(name, value)
    return out


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
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The one client session (created on first use, in the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                trust_env=False,
                # Backends may send long headers (cookies, CSP); do not be stricter than browsers.
                max_line_size=65536,
                max_field_size=65536,
            )
        return self._session

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()

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
        # Expect: 100-continue was already answered by the gateway's own server.
        headers = end_to_end(request.headers, {*drop_request_headers, "Expect"})
        headers.update(extra_headers or {})
        body = request.content if request.body_exists else None
        on_activity()
        try:
            upstream = await self.session.request(
                request.method,
                target,
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                expect100=False,
            )
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        response: web.StreamResponse | None = None
        sent = self.traffic.http_to_client
        try:
            out = end_to_end(upstream.headers)
            if drop_set_cookie is not None:
                for value in out.popall("Set-Cookie", []):
                    if not drop_set_cookie(value):
                        out.add("Set-Cookie", value)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                sent.n += len(chunk)
                on_activity()
            await response.write_eof()
            return response
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
            if response is None or not response.prepared:
                raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
            # Either side went away mid-body; the status line is out, so cut the connection.
            log.debug("proxied response from %s cut short: %s", target, exc)
            if request.transport is not None:
                request.transport.close()
            return response
        finally:
            upstream.release()
            if body is not None:
                self.traffic.http_to_backend.n += request.content.total_bytes

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
        on_open: Callable[[web.WebSocketResponse], None] = lambda ws: None,
        on_close: Callable[[web.WebSocketResponse], None] = lambda ws: None,
    ) -> web.StreamResponse:
        """Connect to the backend first, then accept the client with the subprotocol it chose.

        Raises:
            BackendUnavailable: the backend could not be reached.
        """
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        drop = {*drop_request_headers}
        drop.update(name for name in request.headers if name.lower().startswith("sec-websocket-"))
        headers = end_to_end(request.headers, drop)
        headers.update(extra_headers or {})
        on_activity()
        try:
            upstream = await self.session.ws_connect(
                target,
                protocols=protocols,
                headers=headers,
                autoclose=False,
                autoping=True,
                max_msg_size=self.max_ws_message,
                compress=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            return web.json_response(
                {"error": f"the viz server refused the websocket ({exc.status} {exc.message})"},
                status=exc.status if 400 <= exc.status < 600 else 502,
            )
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc

        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            autoping=True,
            max_msg_size=self.max_ws_message,
            compress=False,
        )
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close(code=1001, message=b"client handshake failed")
            raise
        on_open(client)
        try:
            await _bridge(client, upstream, transform, on_activity, self.traffic)
        finally:
            on_close(client)
            if not upstream.closed:
                await upstream.close(code=1001, message=b"gateway closing")
        return client


async def _pump(
    src, dst, transform: FrameTransform | None, on_activity: Callable[[], None], count: ByteCount
) -> tuple[int, str]:
    """Copy messages src -> dst until src closes, adding payload sizes to ``count``.

    Returns (close code, reason).
    """
    WS = aiohttp.WSMsgType
    try:
        while True:
            msg = await src.receive()
            if msg.type is WS.BINARY:
                if transform is not None and not transform.done:
                    for frame in transform.feed(msg.data):
                        await dst.send_bytes(frame)
                else:
                    await dst.send_bytes(msg.data)
                count.n += len(msg.data)
            elif msg.type is WS.TEXT:
                await dst.send_str(msg.data)
                count.n += len(msg.data)
            elif msg.type is WS.CLOSE:
                return int(msg.data or 1005), msg.extra or ""
            elif msg.type in (WS.CLOSING, WS.CLOSED, WS.ERROR):
                return 1006, ""
            else:  # PING/PONG are answered by aiohttp on each hop
                continue
            on_activity()
    except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
        log.debug("websocket pump stopped: %s", exc)
        return 1006, ""


async def _bridge(client, upstream, transform, on_activity, traffic: Traffic) -> None:
    to_backend = asyncio.ensure_future(
        _pump(client, upstream, transform, on_activity, traffic.ws_to_backend)
    )
    to_client = asyncio.ensure_future(_pump(upstream, client, None, on_activity, traffic.ws_to_client))
    try:
        done, _ = await asyncio.wait({to_backend, to_client}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        to_backend.cancel()
        to_client.cancel()
        raise
    first = to_backend if to_backend in done else to_client
    source, other = (client, upstream) if first is to_backend else (upstream, client)
    code, reason = first.result()
    code = _NOT_SENDABLE.get(code, code)
    message = reason.encode()[:123]
    # Tell the other side first (this also ends its pump), then answer the side that closed.
    try:
        await asyncio.wait_for(other.close(code=code, message=message), 5)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        pass
    try:
        await asyncio.wait_for(source.close(code=code, message=message), 5)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        pass
    for task in (to_backend, to_client):
        if not task.done():
            task.cancel()
    await asyncio.gather(to_backend, to_client, return_exceptions=True)
