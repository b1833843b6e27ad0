"""HTTP/1.1 connections from the gateway to viz servers, kept alive and reused.

The proxy's hot path: one request head written as bytes, the response head
parsed in one pass, the body handed over as it arrives (a Content-Length body
straight from the shared read buffer to the browser's socket, see
:meth:`UpstreamConnection.send_rest`). It speaks only what
the proxy needs (requests it forwards, responses it streams back) and handles
what ``shared/notes/proxy-pitfalls.md`` lists for the backend side: no
connection limit, no total timeout (a connect timeout only), redirects and
cookies untouched, hop-by-hop headers dropped, bodies passed through without
decoding gzip, chunked responses decoded, keep-alive only when the viz server
allows it.

Example:
    >>> pool = UpstreamPool(connect_timeout=5)
    >>> # conn = await pool.acquire("127.0.0.1", 8080)
    >>> # conn.transport.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    >>> # head = await conn.head(); whole = conn.complete_body()  # or: chunks = await conn.read()
    >>> # or, for a Content-Length body: await conn.send_rest(browser_transport, protocol, writer, count, touch)
    >>> # pool.release(conn)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from prefect_hpcviz.viz.gateway.metrics import ByteCount
from prefect_hpcviz.viz.gateway.read_buffer import ReadBuffer, shared_read_buffer

MAX_HEAD = 256 * 1024  # response heads larger than this are refused (browsers cap near here too)
POOL_IDLE_S = 15.0  # idle connections are closed after this (aiohttp servers keep them 75 s)
READ_HIGH_WATER = 512 * 1024  # body bytes buffered before reading from the viz server pauses
HEAD_PROBE = 16 * 1024  # a response head is looked for in a copy of this much of a read (more if it is longer)

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
_NO_BODY_STATUS = frozenset({204, 304, *range(100, 200)})


class UpstreamError(Exception):
    """The viz server closed the connection or sent something that is not HTTP/1.1.

    ``before_head`` is True when nothing of the response had arrived yet.
    """

    def __init__(self, message: str, *, before_head: bool) -> None:
        super().__init__(message)
        self.before_head = before_head


def connection_tokens(value: str | None) -> frozenset[str]:
    """The header names a ``Connection`` header lists, lowercased.

    Example:
        >>> sorted(connection_tokens("keep-alive, X-Private"))
        ['keep-alive', 'x-private']
    """
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


class ResponseHead:
    """Status, reason and the end-to-end headers of a viz server's response."""

    __slots__ = ("status", "reason", "headers", "keep_alive", "length", "chunked")

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], keep_alive: bool,
                 length: int | None, chunked: bool) -> None:  # fmt: skip
        self.status = status
        self.reason = reason
        self.headers = headers  # hop-by-hop ones (and those named in Connection) already dropped
        self.keep_alive = keep_alive
        self.length = length  # Content-Length, None if absent
        self.chunked = chunked


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse ``HTTP/1.x NNN reason`` and the header lines (without the blank line).

    Example:
        >>> h = parse_response_head(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: x-a\\r\\nX-A: 1")
        >>> (h.status, h.headers, h.length, h.keep_alive)
        (200, [('Content-Length', '2')], 2, True)
    """
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    raw: list[tuple[str, str, str]] = []
    connection = ""
    length = None
    chunked = False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t":
            raise ValueError(f"malformed header line: {line[:80]!r}")
        value = value.strip()
        lname = name.lower()
        if lname == "connection":
            connection = f"{connection},{value}" if connection else value
        elif lname == "content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ValueError(f"bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif lname == "transfer-encoding":
            chunked = value.lower().rsplit(",", 1)[-1].strip() == "chunked"
            if not chunked:
                length = None  # an encoding other than chunked: read until the server closes
        raw.append((name, value, lname))
    tokens = connection_tokens(connection) if connection else frozenset()
    skip = HOP_BY_HOP | tokens if tokens else HOP_BY_HOP
    headers = [(name, value) for name, value, lname in raw if lname not in skip]
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    if chunked:
        length = None
    return ResponseHead(int(code), reason, headers, keep_alive, length, chunked)


class _ChunkedBody:
    """Decodes ``Transfer-Encoding: chunked`` incrementally; trailers are dropped."""

    __slots__ = ("buf", "left", "state")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.left = 0
        self.state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailer lines

    def feed(self, data: bytes, out: list[bytes]) -> bool:
        """Append decoded data to ``out``; True once the last chunk and trailers were read."""
        buf = self.buf
        buf += data
        while True:
            if self.state == 1:
                if not buf:
                    return False
                take = min(self.left, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                self.left -= take
                if self.left == 0:
                    self.state = 2
            elif self.state == 2:
                if len(buf) < 2:
                    return False
                if buf[:2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                del buf[:2]
                self.state = 0
            else:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 4096:
                        raise ValueError("chunk size line too long")
                    return False
                line = bytes(buf[:end])
                del buf[: end + 2]
                if self.state == 3:
                    if not line:  # the blank line after the trailers
                        return True
                    continue
                size = line.split(b";", 1)[0].strip()
                try:
                    self.left = int(size, 16)
                except ValueError:
                    raise ValueError(f"bad chunk size {size[:20]!r}") from None
                self.state = 1 if self.left else 3


class UpstreamConnection(asyncio.BufferedProtocol):
    """One keep-alive connection to a viz server; one request at a time.

    After writing a request: ``await head()``, then ``complete_body()`` (the
    whole body if it already arrived, e.g. small responses), or
    ``send_rest(...)`` (a Content-Length body: straight from the read buffer
    to the browser's socket, no copy, no task step per read), or ``read()``
    until it returns no more chunks (chunked bodies, bodies until close).

    The event loop reads into the shared :class:`~.read_buffer.ReadBuffer`;
    whatever cannot be handed on at once is copied out of it.
    """

    __slots__ = (
        "pool", "key", "transport", "closed", "idle_since", "used", "_read_buffer", "_buf", "_head", "_head_waiter",
        "_chunks", "_buffered", "_left", "_chunked", "_until_close", "_done", "_error", "_read_waiter",
        "_reading_paused", "_writing_paused", "_drain_waiter", "_no_body", "_sink", "tail",
    )  # fmt: skip

    def __init__(self, pool: "UpstreamPool", key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = 0  # requests started on this connection
        self._read_buffer = shared_read_buffer()
        self._buf = b""
        self._head: ResponseHead | None = None
        self._head_waiter: asyncio.Future | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._left = 0  # body bytes still expected (Content-Length framing)
        self._chunked: _ChunkedBody | None = None
        self._until_close = False
        self._done = False
        self._error: UpstreamError | None = None
        self._read_waiter: asyncio.Future | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self._no_body = False
        self._sink: _BrowserSink | None = None
        self.tail = b""  # after a 101 answer: the first bytes of the new protocol

    # ------------------------------------------------------------ requests
    def start(self, *, no_body: bool) -> None:
        """Get ready for the response to a request about to be written (``no_body``: HEAD)."""
        self.used += 1
        self._buf = b""
        self._head = None
        self._head_waiter = None
        self._chunks = []
        self._buffered = 0
        self._chunked = None
        self._until_close = False
        self._done = False
        self._error = None
        self._no_body = no_body
        self._sink = None
        self.tail = b""

    async def head(self) -> ResponseHead:
        """The response head (interim 1xx responses are skipped)."""
        if self._head is None and self._error is None:
            self._head_waiter = asyncio.get_running_loop().create_future()
            await self._head_waiter
        if self._head is None:
            raise self._error or UpstreamError("no response from the viz server", before_head=True)
        return self._head

    def complete_body(self) -> bytes | None:
        """The whole body if it has all arrived (and nothing was read yet), else None."""
        if not self._done or self._error is not None:
            return None
        chunks, self._chunks = self._chunks, []
        self._buffered = 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def arrived(self) -> bytes:
        """The body bytes that arrived so far and were not taken yet (then sent with the head)."""
        chunks, self._chunks = self._chunks, []
        self._buffered = 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def read(self) -> list[bytes]:
        """Body chunks that arrived since the last call (not joined: no copy); ``[]`` at the end."""
        while not self._chunks:
            if self._done:
                return []
            if self._error is not None:
                raise self._error
            self._resume()  # paused after the head, or over READ_HIGH_WATER
            self._read_waiter = asyncio.get_running_loop().create_future()
            await self._read_waiter
        chunks, self._chunks = self._chunks, []
        self._buffered = 0
        self._resume()
        return chunks

    @property
    def streams_to_browser(self) -> bool:
        """True when the rest of the body can go through :meth:`send_rest` (Content-Length framing)."""
        return self._head is not None and self._chunked is None and not self._until_close

    async def send_rest(self, browser: asyncio.Transport, protocol: Any, writer: Any, sent: ByteCount,
                        on_activity: Callable[[], None]) -> int:  # fmt: skip
        """Write the rest of a Content-Length body to the browser as it arrives; the bytes written.

        ``browser`` is the browser connection's transport, ``protocol`` its
        protocol (``writing_paused``) and ``writer`` its aiohttp writer (``await
        drain()``); the response head must be out already. Each read goes from
        the read buffer to the browser's socket in the event loop's read
        callback; while the browser's socket is full, reading from the viz
        server pauses.

        Raises:
            UpstreamError: the viz server closed the connection mid-body.
            ConnectionResetError: the browser went away.
        """
        assert self.streams_to_browser
        sink = _BrowserSink(browser, protocol, writer, sent, on_activity, asyncio.get_running_loop().create_future())
        chunks, self._chunks = self._chunks, []
        self._buffered = 0
        for chunk in chunks:  # what arrived before (copies)
            if not sink.write(chunk):
                break
        if not self._done and self._error is None and not sink.lost:
            self._sink = sink
            self._resume()
            self._on_browser_write()
            try:
                await sink.finished
            finally:
                self._sink = None
        if sink.lost:
            raise ConnectionResetError("the browser closed the connection")
        if self._error is not None:
            raise self._error
        return sink.count

    @property
    def reusable(self) -> bool:
        """True when the response was read completely and the server keeps the connection."""
        return (
            self._done
            and self._error is None
            and not self.closed
            and self._head is not None
            and self._head.keep_alive
            and self._head.status != 101
            and not self._until_close
        )

    async def drain(self) -> None:
        """Wait while the socket's write buffer is full."""
        if self._writing_paused and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter
        if self.closed:
            raise self._error or UpstreamError("the viz server closed the connection", before_head=False)

    def hand_over(self) -> None:
        """Forget everything once a 101 answer's new protocol has taken the transport over.

        The transport may keep a reference to this object (uvloop keeps the
        ``get_buffer`` of a protocol it replaced) for as long as the websocket
        is open: then it holds no more than its empty slots.
        """
        self.transport = self.pool = self.key = None  # type: ignore[assignment]
        self._head = None
        self._chunks = []
        self._buf = self.tail = b""
        self._head_waiter = self._read_waiter = self._drain_waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    # ------------------------------------------------------------ protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer.get()

    def buffer_updated(self, nbytes: int) -> None:
        data = self._read_buffer.get()[:nbytes]  # valid until the next read: handed on or copied here
        if self._head is None:
            self._on_head_bytes(data)
        elif self._head.status == 101:  # until the new protocol takes the transport over
            self.tail += data
        elif not self._done:
            self._on_body(data)
        elif nbytes:  # bytes after a complete response: not a server to trust with another request
            self.close()

    def _on_head_bytes(self, data: memoryview) -> None:
        if self._buf:
            view = memoryview(self._buf + data)
            buf = view.obj
        else:
            view = data
            buf = bytes(data[:HEAD_PROBE])  # the head is searched in a copy of the read's start only
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                if len(buf) < len(view):  # a head longer than the probe
                    buf = bytes(view)
                    continue
                if len(view) - start > MAX_HEAD:
                    self._fail(f"response head over {MAX_HEAD} bytes", before_head=True)
                    self.close()
                    return
                self._buf = bytes(view[start:])
                return
            try:
                head = parse_response_head(buf[start:end])
            except ValueError as exc:
                self._fail(f"the viz server sent an invalid response ({exc})", before_head=False)
                self.close()
                return
            start = end + 4
            if 100 <= head.status < 200 and head.status != 101:
                continue  # 100 Continue, 103 Early Hints: the final answer follows
            break
        self._buf = b""
        self._head = head
        body = view[start:]
        if head.status == 101:  # switching protocols: the rest belongs to the new one
            self.tail = bytes(body)
            self._done = True
            body = b""
        elif self._no_body or head.status in _NO_BODY_STATUS:
            self._done = True
        elif head.chunked:
            self._chunked = _ChunkedBody()
        elif head.length is not None:
            self._left = head.length
            self._done = head.length == 0
        else:
            self._until_close = True
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if body and not self._done:
            self._on_body(body)
        if not self._done and not self._reading_paused:
            # The rest waits in the socket until the proxy takes it (send_rest, read):
            # read before then, it would have to be copied out of the read buffer.
            self._pause()

    def _on_body(self, data: memoryview | bytes) -> None:
        if self._chunked is not None:
            out: list[bytes] = []
            try:
                self._done = self._chunked.feed(data, out)
            except ValueError as exc:
                self._fail(f"invalid chunked body ({exc})", before_head=False)
                self.close()
                return
            for chunk in out:
                self._chunks.append(chunk)
                self._buffered += len(chunk)
        elif self._until_close:
            self._chunks.append(bytes(data))
            self._buffered += len(data)
        else:
            n = len(data)
            if n > self._left:  # more than announced: keep what belongs, never reuse
                data = data[: self._left]
                n = self._left
                self._until_close = True
            self._left -= n
            if self._left == 0:
                self._done = True
            sink = self._sink
            if sink is not None:
                if sink.write(data, self._read_buffer):
                    self._on_browser_write()
                if self._done or sink.lost:
                    sink.end()
                return
            self._chunks.append(bytes(data))
            self._buffered += n
        if self._buffered > READ_HIGH_WATER and not self._done and not self._reading_paused:
            self._pause()
        self._wake_reader()

    def _on_browser_write(self) -> None:
        """Pause reading from the viz server while the browser's socket is full."""
        sink = self._sink
        if sink is not None and sink.protocol.writing_paused and not self._reading_paused and not self._done:
            self._pause()
            asyncio.ensure_future(self._resume_when_drained(sink))

    async def _resume_when_drained(self, sink: "_BrowserSink") -> None:
        try:
            await sink.writer.drain()
        except ConnectionError:
            sink.lost = True
            sink.end()
            return
        if self._sink is sink:
            self._resume()

    def _pause(self) -> None:
        self._reading_paused = True
        assert self.transport is not None
        self.transport.pause_reading()

    def _resume(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, message: str, *, before_head: bool) -> None:
        if self._error is None:
            self._error = UpstreamError(message, before_head=before_head)
        for waiter in (self._head_waiter, self._read_waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self._sink is not None:
            self._sink.end()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self._until_close and self._head is not None and self._error is None:
            self._done = True  # the body was "until the server closes"
            self._wake_reader()
        elif not self._done:
            why = f": {exc}" if exc else ""
            self._fail(f"the viz server closed the connection{why}", before_head=self._head is None)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _BrowserSink:
    """Where :meth:`UpstreamConnection.send_rest` writes: the browser's transport, counted."""

    __slots__ = ("transport", "protocol", "writer", "sent", "on_activity", "finished", "count", "lost")

    def __init__(self, transport: asyncio.Transport, protocol: Any, writer: Any, sent: ByteCount,
                 on_activity: Callable[[], None], finished: asyncio.Future) -> None:  # fmt: skip
        self.transport = transport
        self.protocol = protocol
        self.writer = writer
        self.sent = sent
        self.on_activity = on_activity
        self.finished = finished
        self.count = 0
        self.lost = False

    def write(self, data: memoryview | bytes, read_buffer: ReadBuffer | None = None) -> bool:
        """Write (a view of ``read_buffer``, or bytes); False if the browser is gone."""
        if self.transport.is_closing():
            self.lost = True
            return False
        if read_buffer is not None:
            read_buffer.forward(self.transport, data)
        else:
            self.transport.write(data)
        n = len(data)
        self.count += n
        self.sent.n += n
        self.on_activity()
        return True

    def end(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


class UpstreamPool:
    """Idle keep-alive connections per viz server (host, port); no limit on their number.

    Args:
        connect_timeout: seconds to wait for a viz server to accept a connection.
        idle_s: idle connections older than this are closed.
    """

    def __init__(self, *, connect_timeout: float = 10.0, idle_s: float = POOL_IDLE_S) -> None:
        self.connect_timeout = connect_timeout
        self.idle_s = idle_s
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    async def acquire(self, host: str, port: int) -> UpstreamConnection:
        """An idle connection to ``host:port``, or a new one (OSError/TimeoutError if refused)."""
        key = (host, port)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self, key), host, port), self.connect_timeout
        )
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Keep a connection for the next request if it can be reused; close it otherwise."""
        if not conn.reusable:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.idle_s, self._close_stale)

    def forget(self, conn: UpstreamConnection) -> None:
        """Drop a connection the viz server closed while it was idle."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def _close_stale(self) -> None:
        self._sweep = None
        cutoff = time.monotonic() - self.idle_s
        for key in list(self._idle):
            stale = [c for c in self._idle[key] if c.idle_since <= cutoff]
            for conn in stale:
                conn.close()  # connection_lost -> forget()
            self._idle[key] = [c for c in self._idle.get(key, ()) if c not in stale]
            if not self._idle[key]:
                del self._idle[key]
        if self._idle:
            self._sweep = asyncio.get_running_loop().call_later(self.idle_s, self._close_stale)

    def close(self) -> None:
        """Close every idle connection."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in self._idle.values():
            for conn in list(conns):
                conn.close()
        self._idle.clear()


def request_head(
    method: str,
    path_qs: str,
    raw_headers: Iterable[tuple[bytes, bytes]],
    skip: frozenset[bytes],
    extra: list[tuple[str, str]],
) -> list[bytes]:
    """The lines of a request head (with the blank line), ready for ``b"".join``.

    Example:
        >>> b"".join(request_head("GET", "/a%20b", [(b"Host", b"h"), (b"TE", b"x")],
        ...                       frozenset({b"te"}), [("X-F", "1")]))
        b'GET /a%20b HTTP/1.1\\r\\nHost: h\\r\\nX-F: 1\\r\\n\\r\\n'
    """
    lines = [f"{method} {path_qs} HTTP/1.1\r\n".encode("utf-8", "surrogateescape")]
    for name, value in raw_headers:
        if name.lower() not in skip:
            lines.append(b"%s: %s\r\n" % (name, value))
    for name, value in extra:
        lines.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
    lines.append(b"\r\n")
    return lines
