"""A lean load generator for ``benchmarks/gateway.py``: raw HTTP/1.1 and websocket clients on uvloop.

On a 2-core machine the load generator, the echo backend and the proxy under
test share the CPUs, so every microsecond the load generator spends per
request is taken from the proxy, and the same for all three targets: a
heavy client pulls every ratio toward 1. This one does only what a
measurement needs, and checks what it must:

- HTTP: one keep-alive connection per worker, the request prebuilt as bytes,
  the response head parsed (status, Content-Length, Connection: close), the
  body counted in a reused read buffer, never copied; a request counts as
  good only with status 200 and, where given, the expected body size;
- websocket: the RFC 6455 handshake (101 and the right Sec-WebSocket-Accept
  checked), then one masked binary frame sent and its echo awaited: a good
  round trip is one unmasked binary frame with the same payload size.

Example:
    >>> frame = masked_binary_frame(b"hi", key=b"\\x00\\x00\\x00\\x00")
    >>> frame
    b'\\x82\\x82\\x00\\x00\\x00\\x00hi'
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from urllib.parse import urlsplit

READ_SIZE = 256 * 1024
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class LoadError(Exception):
    """A response that is not what the measurement expects."""


def masked_binary_frame(payload: bytes, key: bytes | None = None) -> bytes:
    """One final binary frame as a client sends it (masked).

    The frame is built once and sent for every round trip of a connection:
    a load generator needs no fresh masking key per message (browsers do).
    """
    key = key if key is not None else os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x82, 0x80 | 127)) + n.to_bytes(8, "big")
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little") if n else b""
    return head + key + masked


def _parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise LoadError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class _Connection(asyncio.BufferedProtocol):
    """One connection of the load generator: HTTP responses, then (after a 101) websocket frames."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.head = b""
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.left = -1  # body bytes still to come; -1 while reading a head
        self.got = 0
        self.ws = False
        self.frame_head = b""
        self.frame_left = -1  # payload bytes of the current frame still to come; -1 while reading a header
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.waiter is None or self.waiter.done():  # bytes nobody asked for: out of step, never reused
            self.lost = True
            assert self.transport is not None
            self.transport.close()
            return
        if self.ws:
            self._frames(nbytes)
        else:
            self._http(nbytes)

    def _http(self, nbytes: int) -> None:
        body = nbytes  # body bytes in this read
        if self.left < 0:  # a head first
            end = self.buffer.obj.find(b"\r\n\r\n", 0, nbytes)  # searched in place, no copy
            if end < 0 or self.head:  # a head split across reads (rare): collect it
                self.head += bytes(self.buffer[:nbytes])
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, body = self.head[:end], len(self.head) - end - 4
                self.head = b""
            else:
                head, body = bytes(self.buffer[:end]), nbytes - end - 4
            try:
                self.status, self.headers = _parse_head(head)
            except LoadError as exc:
                self._finish(exc)
                return
            if self.status == 101:
                self.ws = True
                self._finish(None)
                return
            length = self.headers.get(b"content-length", b"")
            if not length.isdigit():
                self._finish(LoadError("a response without Content-Length (the load generator needs one)"))
                return
            self.left = int(length)
            self.got = 0
        take = min(body, self.left)
        self.got += take
        self.left -= take
        if self.left == 0:
            self.left = -1
            self._finish(None)

    def _frames(self, nbytes: int) -> None:
        i = 0
        while i < nbytes:
            if self.frame_left < 0:  # a frame header, possibly split across reads
                taken = bytes(self.buffer[i : min(nbytes, i + 10 - len(self.frame_head))])
                h = self.frame_head + taken
                length = h[1] & 0x7F if len(h) > 1 else 0
                size = 2 if length < 126 else 4 if length == 126 else 10
                if len(h) < size or len(h) < 2:
                    self.frame_head = h  # all of this read was taken
                    return
                i += len(taken) - (len(h) - size)
                self.frame_head = b""
                if length == 126:
                    length = int.from_bytes(h[2:4], "big")
                elif length == 127:
                    length = int.from_bytes(h[2:10], "big")
                if h[0] != 0x82 or h[1] & 0x80:
                    self._finish(LoadError(f"expected one unmasked final binary frame, got {h[:2].hex()}"))
                    return
                self.frame_left = length
                self.got = 0
            take = min(nbytes - i, self.frame_left)
            self.got += take
            self.frame_left -= take
            i += take
            if self.frame_left == 0:
                self.frame_left = -1
                self._finish(None)

    def _finish(self, error: Exception | None) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._finish(ConnectionResetError("the server closed the connection"))

    async def exchange(self, data: bytes) -> None:
        """Send ``data``, wait for the whole answer (a response, or one websocket frame)."""
        assert self.transport is not None
        if self.lost:
            raise ConnectionResetError("the connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        await self.waiter


class LoadGenerator:
    """Connections to one target; all of them read into one buffer (one event loop)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.buffer = memoryview(bytearray(READ_SIZE))

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Connection(self.buffer), self.host, self.port)
        return conn

    def request(self, method: str, body: bytes) -> bytes:
        """The request as bytes, built once per worker."""
        length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
        head = f"{method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}{length}\r\n"
        return head.encode() + body

    async def websocket(self) -> _Connection:
        """A connection after a checked websocket handshake."""
        conn = await self.connect()
        key = base64.b64encode(os.urandom(16))
        handshake = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ).encode() + b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
        await conn.exchange(handshake)
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        if conn.status != 101 or conn.headers.get(b"sec-websocket-accept") != accept:
            conn.transport.close()
            raise LoadError(f"websocket handshake refused ({conn.status})")
        return conn
