"""Put the session key into the browser's wslink hello, so the key never reaches the browser.

trame talks wslink 2.x over its websocket: binary msgpack messages split into
chunks, each with a 12-byte header (uint32 little-endian message id, offset,
total size). The browser's first message is ``wslink.hello`` with
``args[0]["secret"]`` (trame's default "wslink-secret"); the viz server only
accepts the session key there. The gateway, which already checked the
user's cookie, decodes the browser's messages until it sees that hello,
swaps in the key, and re-frames it as one chunk (same id). Every other
message passes through byte for byte, and after the hello nothing is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

HEADER_LENGTH = 12
# A wslink message is a msgpack map: its first byte is a fixmap, map16 or map32.
_MAP_START = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


def decode_header(frame: bytes) -> tuple[int, int, int]:
    """(message id, offset, total size) of one wslink chunk."""
    return (
        int.from_bytes(frame[0:4], "little"),
        int.from_bytes(frame[4:8], "little"),
        int.from_bytes(frame[8:12], "little"),
    )


def encode_header(message_id: int, offset: int, total: int) -> bytes:
    """The 12-byte header of one wslink chunk."""
    return message_id.to_bytes(4, "little") + offset.to_bytes(4, "little") + total.to_bytes(4, "little")


@dataclass
class _Pending:
    total: int
    content: bytearray
    received: int = 0
    frames: list[bytes] = field(default_factory=list)


class HelloSecretInjector:
    """Rewrites ``args[0]["secret"]`` of the first ``wslink.hello`` a client sends.

    Feed it each binary frame from the browser in order; forward what it
    returns. Frames of a message that might be the hello are held until the
    message is complete (at most ``max_pending`` bytes; wslink itself refuses
    anything over 512 bytes before the hello). After ``max_messages`` other
    messages it stops looking (the client does not speak wslink).

    Example:
        >>> import msgpack
        >>> from wslink.chunking import generate_chunks
        >>> hello = {"wslink": "1.0", "id": "system:c0:0", "method": "wslink.hello",
        ...          "args": [{"secret": "wslink-secret"}], "kwargs": {}}
        >>> injector = HelloSecretInjector("session-key")
        >>> [frame] = injector.feed(next(generate_chunks(msgpack.packb(hello), 0)))
        >>> msgpack.unpackb(frame[12:])["args"][0]["secret"]
        'session-key'
        >>> injector.done
        True
    """

    def __init__(self, secret: str, *, max_pending: int = 64 * 1024, max_messages: int = 8) -> None:
        self._secret = secret
        self._max_pending = max_pending
        self._messages_left = max_messages
        self._pending: dict[int, _Pending] = {}
        self._pending_bytes = 0
        self._passing: set[int] = set()  # messages given up on: their frames pass as they come
        self.done = False

    def feed(self, frame: bytes) -> list[bytes]:
        """Frames to forward now for one frame received (possibly none yet)."""
        if self.done or len(frame) < HEADER_LENGTH:
            return [frame]
        message_id, offset, total = decode_header(frame)
        chunk = frame[HEADER_LENGTH:]
        if message_id in self._passing:  # still a message that is not the hello
            self._count_message()
            return (self._release_all() if self.done else []) + [frame]
        pending = self._pending.get(message_id)
        if pending is None:
            if total > self._max_pending or offset != 0 or not chunk or chunk[0] not in _MAP_START:
                # Too big to be a hello (the server refuses it anyway), or not the
                # start of a msgpack map: not a hello, pass it on at once.
                self._passing.add(message_id)
                self._count_message()
                return (self._release_all() if self.done else []) + [frame]
            pending = self._pending[message_id] = _Pending(total=total, content=bytearray(total))
        if total != pending.total or offset + len(chunk) > total:
            self._passing.add(message_id)
            return self._release(message_id) + [frame]
        pending.content[offset : offset + len(chunk)] = chunk
        pending.received += len(chunk)
        pending.frames.append(frame)
        self._pending_bytes += len(frame)
        if pending.received < total:
            if self._pending_bytes > self._max_pending:
                self._passing.update(self._pending)
                return self._release_all()
            return []
        frames = self._release(message_id)
        rewritten = self._rewrite(bytes(pending.content))
        if rewritten is None:
            self._count_message()
            return frames + (self._release_all() if self.done else [])
        self.done = True
        return self._release_all() + [encode_header(message_id, 0, len(rewritten)) + rewritten]

    def _count_message(self) -> None:
        # wslink's hello is the first message; a client that sent several
        # others first does not speak wslink, so stop looking.
        self._messages_left -= 1
        if self._messages_left <= 0:
            self.done = True

    def _rewrite(self, payload: bytes) -> bytes | None:
        try:
            message = msgpack.unpackb(payload)
        except Exception:  # not msgpack: not ours to touch
            return None
        if not isinstance(message, dict) or message.get("method") != "wslink.hello":
            return None
        args = message.get("args")
        if not args:
            message["args"] = [{"secret": self._secret}]
        elif isinstance(args, list) and isinstance(args[0], dict):
            args[0]["secret"] = self._secret
        else:
            return None
        return msgpack.packb(message)

    def _release(self, message_id: int) -> list[bytes]:
        pending = self._pending.pop(message_id, None)
        if pending is None:
            return []
        self._pending_bytes -= sum(len(f) for f in pending.frames)
        return pending.frames

    def _release_all(self) -> list[bytes]:
        frames: list[bytes] = []
        for message_id in list(self._pending):
            frames.extend(self._release(message_id))
        return frames
