"""Relay one proxied websocket as bytes, following frame boundaries without decoding payloads.

After both handshakes (the gateway connects to the viz server first, then
accepts the browser with the subprotocol the server chose), frames pass
through unchanged in both directions: the browser's frames are already
masked, which is what a server expects from its client, and the server's are
unmasked, which is what a browser expects. Nothing is copied into messages,
no task runs per connection, and an idle websocket costs only its two
sockets and one small object.

The relay still knows where each frame starts, so it can:

- count payload bytes per direction (metrics) and note activity;
- refuse messages over ``max_message`` (close 1009 to the sender);
- let a :class:`FrameTransform` rewrite the browser's first messages (the
  wslink hello gets the session key) before it switches to pass-through;
- close cleanly: close frames pass as sent, so codes and reasons arrive
  unchanged, and nothing follows a close frame to the same side (so a side
  the relay closed itself never gets the other side's answering close too);
  when one side vanishes without one, the other gets a 1001 close frame
  (never 1005/1006/1015 on the wire) and its TCP connection is closed at once;
- close both sides on request (``close(code, reason)``, e.g. at shutdown).

Example:
    >>> scanner = FrameScanner(max_message=1 << 20)
    >>> scanner.scan(b"\\x82\\x03abc\\x81\\x02hi")   # two frames: 5 payload bytes
    5
    >>> scanner.at_boundary
    True
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, Protocol

from prefect_hpcviz.viz.gateway.metrics import ByteCount

CLOSE_GRACE_S = 5.0  # after close frames went both ways, the TCP connections end within this
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE = 0x0, 0x1, 0x2, 0x8


class FrameTransform(Protocol):
    """Rewrites browser->server binary messages until ``done`` (see wslink_auth.HelloSecretInjector)."""

    done: bool

    def feed(self, frame: bytes) -> list[bytes]: ...


class MessageTooBig(Exception):
    """A websocket message is larger than the relay allows."""


class FrameScanner:
    """Follows frame boundaries in one direction's byte stream (payloads are skipped, not copied)."""

    __slots__ = ("left", "partial", "close_seen", "message", "max_message")

    def __init__(self, max_message: int) -> None:
        self.left = 0  # payload bytes of the current frame not seen yet
        self.partial = b""  # the start of a frame header split across reads
        self.close_seen = False
        self.message = 0  # payload bytes of the current (possibly fragmented) message
        self.max_message = max_message

    @property
    def at_boundary(self) -> bool:
        """True when everything forwarded so far ends with a complete frame."""
        return self.left == 0 and not self.partial

    def scan(self, data: bytes) -> int:
        """Message payload bytes in ``data`` (control frames not counted once complete).

        Raises MessageTooBig at the header of an oversized message.
        """
        n = len(data)
        left = self.left
        if left >= n:  # the common large-message case: all of it is payload
            self.left = left - n
            return n
        if self.partial:  # then left is 0: a header continues
            data = self.partial + data
            n = len(data)
            self.partial = b""
        payload = left
        i = left
        left = 0
        while i < n:
            if n - i < 2:
                self.partial = data[i:]
                break
            b0 = data[i]
            b1 = data[i + 1]
            length = b1 & 0x7F
            size = 2 if length < 126 else 4 if length == 126 else 10
            if b1 & 0x80:
                size += 4
            if n - i < size:
                self.partial = data[i:]
                break
            if length == 126:
                length = int.from_bytes(data[i + 2 : i + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[i + 2 : i + 10], "big")
            opcode = b0 & 0x0F
            if opcode < 8:
                self.message = length if opcode else self.message + length
                if self.message > self.max_message:
                    raise MessageTooBig(f"a websocket message over {self.max_message} bytes")
            else:  # control frames are not message payload (counted below, taken back here)
                payload -= length
                self.close_seen = self.close_seen or opcode == OP_CLOSE
            i += size
            take = min(length, n - i)
            payload += take
            i += take
            left = length - take
        self.left = left
        return payload


def mask(key: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-byte masking ``key`` (RFC 6455, 5.3).

    Example:
        >>> mask(b"\\x01\\x02\\x03\\x04", mask(b"\\x01\\x02\\x03\\x04", b"hello"))
        b'hello'
    """
    n = len(data)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, *, masked: bool) -> bytes:
    """One final frame; ``masked`` for frames a client sends to a server.

    Example:
        >>> encode_frame(OP_BINARY, b"abc", masked=False)
        b'\\x82\\x03abc'
    """
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126:
        head = bytes((0x80 | opcode, mbit | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, mbit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, mbit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask(key, payload)


def close_frame(code: int, reason: bytes, *, masked: bool) -> bytes:
    """A close frame with ``code`` and at most 123 bytes of ``reason``."""
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + reason[:123], masked=masked)


def parse_frame(buf: bytearray) -> tuple[bool, int, bytes, int] | None:
    """(fin, opcode, unmasked payload, frame size) of the first complete frame in ``buf``, or None."""
    n = len(buf)
    if n < 2:
        return None
    b0, b1 = buf[0], buf[1]
    length = b1 & 0x7F
    size = 2 if length < 126 else 4 if length == 126 else 10
    key_at = size
    if b1 & 0x80:
        size += 4
    if n < size:
        return None
    if length == 126:
        length = int.from_bytes(buf[2:4], "big")
    elif length == 127:
        length = int.from_bytes(buf[2:10], "big")
    if n < size + length:
        return None
    payload = bytes(buf[size : size + length])
    if b1 & 0x80:
        payload = mask(bytes(buf[key_at : key_at + 4]), payload)
    return bool(b0 & 0x80), b0 & 0x0F, payload, size + length


class WebSocketRelay(asyncio.Protocol):
    """Both directions of one proxied websocket.

    It is the viz server socket's protocol (``data_received`` and friends)
    and the browser connection's payload parser (``feed_data``/``feed_eof``,
    the interface aiohttp's server gives an upgraded connection).

    Args:
        client: the browser's transport (101 already sent).
        client_protocol: the browser connection's protocol (its ``writing_paused``
            says the transport's write buffer is full).
        client_writer: its writer (``await drain()`` waits until that buffer drained).
        backend: the viz server's transport (handshake done).
        transform: rewrites the browser's first messages, or None.
        on_activity: called for every read, either direction.
        to_backend, to_client: payload byte counters.
        max_message: largest message either way.
    """

    __slots__ = (
        "client", "_client_protocol", "_client_writer", "backend", "_transform", "_hello", "_fragments",
        "_on_activity", "_to_backend", "_to_client", "_up", "_down", "_backend_reading_paused", "_grace",
        "finished", "__weakref__",
    )  # fmt: skip

    def __init__(
        self,
        client: asyncio.Transport,
        client_protocol: Any,
        client_writer: Any,
        backend: asyncio.Transport,
        *,
        transform: FrameTransform | None,
        on_activity: Callable[[], None],
        to_backend: ByteCount,
        to_client: ByteCount,
        max_message: int,
    ) -> None:
        self.client = client
        self._client_protocol = client_protocol
        self._client_writer = client_writer
        self.backend = backend
        self._transform = transform if transform is not None and not transform.done else None
        self._hello = bytearray() if self._transform is not None else None
        self._fragments: list[bytes] = []
        self._on_activity = on_activity
        self._to_backend = to_backend
        self._to_client = to_client
        self._up = FrameScanner(max_message)  # browser -> viz server
        self._down = FrameScanner(max_message)  # viz server -> browser
        self._backend_reading_paused = False
        self._grace: asyncio.TimerHandle | None = None
        self.finished: asyncio.Future = asyncio.get_running_loop().create_future()

    # ------------------------------------------------- browser -> viz server
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Bytes from the browser (called by aiohttp's server protocol)."""
        if self.finished.done() or self._up.close_seen:  # after a close frame nothing more may follow
            return False, b""
        self._on_activity()
        if self._transform is not None:
            self._feed_hello(data)
            return False, b""
        try:
            self._to_backend.n += self._up.scan(data)
        except MessageTooBig as exc:
            self._refuse(exc, from_client=True)
            return False, b""
        self.backend.write(data)
        self._after_close_frames()
        return False, b""

    def feed_eof(self) -> None:
        """The browser's connection ended."""
        self._client_gone()

    def _feed_hello(self, data: bytes) -> None:
        """Decode whole frames until the transform is done, then pass the rest through."""
        assert self._transform is not None and self._hello is not None
        buf = self._hello
        buf += data
        if len(buf) > self._up.max_message + 14:
            self._refuse(MessageTooBig(f"a websocket message over {self._up.max_message} bytes"), from_client=True)
            return
        while self._transform is not None:
            frame = parse_frame(buf)
            if frame is None:
                return
            fin, opcode, payload, size = frame
            raw = bytes(buf[:size])
            del buf[:size]
            if opcode < 8:
                self._to_backend.n += len(payload)
            if opcode == OP_BINARY or (opcode == OP_CONTINUATION and self._fragments):
                self._fragments.append(payload)
                if not fin:
                    continue
                single = len(self._fragments) == 1
                message = b"".join(self._fragments) if not single else self._fragments[0]
                self._fragments = []
                for out in self._transform.feed(message):
                    if out is message and single:  # passed on unchanged: the frame as sent
                        self.backend.write(raw)
                    else:
                        self.backend.write(encode_frame(OP_BINARY, out, masked=True))
                if self._transform.done:
                    self._transform = None
            else:  # text, control frames: as sent
                if opcode == OP_CLOSE:
                    self._up.close_seen = True
                self.backend.write(raw)
        rest = bytes(buf)
        self._hello = None
        if rest:
            self.feed_data(rest)

    # ------------------------------------------------- viz server -> browser
    def data_received(self, data: bytes) -> None:
        """Bytes from the viz server."""
        if self._down.close_seen:  # the browser had its close frame (the server's, or ours): no second one
            return
        self._on_activity()
        try:
            self._to_client.n += self._down.scan(data)
        except MessageTooBig as exc:
            self._refuse(exc, from_client=False)
            return
        self.client.write(data)
        if self._client_protocol.writing_paused and not self._backend_reading_paused:
            self._backend_reading_paused = True
            self.backend.pause_reading()
            asyncio.ensure_future(self._resume_backend())
        self._after_close_frames()

    async def _resume_backend(self) -> None:
        try:
            await self._client_writer.drain()
        except ConnectionError:
            return
        self._backend_reading_paused = False
        if not self.backend.is_closing():
            self.backend.resume_reading()

    def pause_writing(self) -> None:  # the viz server reads slower than the browser sends
        self.client.pause_reading()

    def resume_writing(self) -> None:
        if not self.client.is_closing():
            self.client.resume_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        """The viz server's connection ended."""
        if not self.client.is_closing():
            if self._down.at_boundary and not self._down.close_seen:
                self.client.write(close_frame(1001, b"", masked=False))
            self.client.close()
        self._finish()

    # ------------------------------------------------------------- closing
    def _client_gone(self) -> None:
        if not self.backend.is_closing():
            if self._up.at_boundary and not self._up.close_seen:
                self.backend.write(close_frame(1001, b"", masked=True))
            self.backend.close()
        self._finish()

    def _after_close_frames(self) -> None:
        """Once close frames went both ways, both TCP connections must end soon."""
        if self._up.close_seen and self._down.close_seen and self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._abort)

    def _refuse(self, exc: MessageTooBig, *, from_client: bool) -> None:
        """Close 1009 to the side that sent too much; drop the other side's connection."""
        sender, scanner, masked = (self.client, self._down, False) if from_client else (self.backend, self._up, True)
        other = self.backend if from_client else self.client
        if scanner.at_boundary and not scanner.close_seen:
            sender.write(close_frame(1009, str(exc).encode(), masked=masked))
            scanner.close_seen = True
        sender.close()
        other.close()
        self._finish()

    async def close(self, code: int = 1001, message: bytes = b"") -> None:
        """Close both sides with ``code`` and ``message`` and wait (5 s at most) until they are gone."""
        if not self.finished.done():
            for transport, scanner, masked in ((self.client, self._down, False), (self.backend, self._up, True)):
                if not transport.is_closing() and scanner.at_boundary and not scanner.close_seen:
                    transport.write(close_frame(code, message, masked=masked))
                    scanner.close_seen = True
            self._after_close_frames()
        try:
            await asyncio.wait_for(asyncio.shield(self.finished), CLOSE_GRACE_S)
        except asyncio.TimeoutError:
            self._abort()

    def _abort(self) -> None:
        self.client.abort()
        self.backend.abort()
        self._finish()

    def _finish(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
        if not self.finished.done():
            self.finished.set_result(None)
