"""The one buffer the proxy's sockets read into, reused from read to read.

The proxy's upstream connections are asyncio ``BufferedProtocol``\\ s: the
event loop reads straight into this buffer (``get_buffer``), the protocol
hands the bytes on at once in ``buffer_updated`` (it writes a view of them to
the other socket, and copies only what must wait), and the next read, of any
socket, reuses it. So a read makes no bytes object and touches no fresh
memory: no copy, no page faults.

One buffer serves every socket of an event loop (of a thread) because the
loop reads one socket at a time and the bytes are gone from it before the
next read. The one exception is a transport that could not send a view at
once: it keeps a reference to the view until the socket takes the bytes, so
:meth:`forward` then *lends* the buffer to it and the next read gets a new one.

Example:
    >>> buffer = ReadBuffer(16)
    >>> view = buffer.get()
    >>> view[:2] = b"hi"
    >>> bytes(view[:2])
    b'hi'
    >>> buffer.lend()
    >>> buffer.get() is view
    False
"""

from __future__ import annotations

import asyncio
import threading

READ_SIZE = 256 * 1024  # what one read may return (uvloop's own read buffer is as large)
COPY_UNDER = 16 * 1024  # smaller data for a transport that holds bytes already is copied, not lent


class ReadBuffer:
    """A reusable read buffer; a new one after it was lent to a transport."""

    __slots__ = ("size", "_view")

    def __init__(self, size: int = READ_SIZE) -> None:
        self.size = size
        self._view = memoryview(bytearray(size))

    def get(self) -> memoryview:
        """Where the next read goes (all of it)."""
        return self._view

    def lend(self) -> None:
        """The current buffer is someone else's now (a transport holds a view of it)."""
        self._view = memoryview(bytearray(self.size))

    def forward(self, transport: asyncio.Transport, data: memoryview) -> None:
        """Write ``data`` (a view of this buffer) to ``transport``; lend the buffer if it was kept.

        Where the transport is already holding bytes (its peer reads slowly),
        a small ``data`` is queued as a copy instead: a whole buffer lent for a
        few bytes would be a waste of memory.
        """
        if len(data) < COPY_UNDER and transport.get_write_buffer_size():
            transport.write(bytes(data))
            return
        transport.write(data)
        if transport.get_write_buffer_size():
            self.lend()


_per_thread = threading.local()


def shared_read_buffer() -> ReadBuffer:
    """The read buffer of this thread's event loop (a protocol takes it when it is made).

    Example:
        >>> shared_read_buffer() is shared_read_buffer()
        True
    """
    buffer = getattr(_per_thread, "buffer", None)
    if buffer is None:
        buffer = _per_thread.buffer = ReadBuffer()
    return buffer
