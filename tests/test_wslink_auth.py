"""The gateway puts the session key into trame's wslink hello; nothing else changes."""

from __future__ import annotations

import os

import msgpack
import pytest
from wslink.chunking import UnChunker, _decode_header, generate_chunks

from prefect_hpcviz.viz.gateway.wslink_auth import HelloSecretInjector, encode_header

KEY = "k" * 43  # the length of secrets.token_urlsafe(32)


def hello(secret="wslink-secret"):
    return {
        "wslink": "1.0",
        "id": "system:c0:0",
        "method": "wslink.hello",
        "args": [{"secret": secret}],
        "kwargs": {},
    }


def call(n=0, payload=b""):
    return {
        "wslink": "1.0",
        "id": f"rpc:c1:{n}",
        "method": "trame.state.update",
        "args": [payload],
        "kwargs": {},
    }


def frames_of(message, max_size=0):
    return list(generate_chunks(msgpack.packb(message), max_size))


def server_reads(frames):
    """What a wslink server (its own UnChunker, 512-byte pre-auth limit) makes of frames."""
    unchunker = UnChunker()
    out = []
    for frame in frames:
        message = unchunker.process_chunk(frame)
        if message is not None:
            out.append(message)
            if message.get("method") == "wslink.hello":
                unchunker.set_max_message_size(4 * 1024**3)
    return out


def test_the_hello_carries_the_session_key_and_keeps_its_message_id():
    injector = HelloSecretInjector(KEY)
    [original] = frames_of(hello())
    [rewritten] = injector.feed(original)
    assert _decode_header(rewritten)[0] == _decode_header(original)[0]
    assert _decode_header(rewritten)[1:] == (0, len(rewritten) - 12)
    [message] = server_reads([rewritten])
    assert message == hello(KEY)
    assert len(rewritten) < 512  # wslink refuses bigger messages before the hello
    assert injector.done


def test_a_hello_split_into_chunks_is_reassembled_and_sent_as_one():
    injector = HelloSecretInjector(KEY)
    chunks = frames_of(hello(), max_size=24)
    assert len(chunks) > 3
    out = []
    for chunk in chunks[:-1]:
        out += injector.feed(chunk)
    assert out == []  # held until complete
    out += injector.feed(chunks[-1])
    assert len(out) == 1
    assert server_reads(out) == [hello(KEY)]


def test_messages_after_the_hello_pass_byte_for_byte():
    injector = HelloSecretInjector(KEY)
    injector.feed(frames_of(hello())[0])
    later = frames_of(call(1, os.urandom(100_000)), max_size=4096) + frames_of(hello("again"))
    assert [f for frame in later for f in injector.feed(frame)] == later


def test_a_message_before_the_hello_passes_unchanged_and_the_hello_is_still_rewritten():
    injector = HelloSecretInjector(KEY)
    early = frames_of(call(0, b"x" * 10))
    assert injector.feed(early[0]) == early
    [rewritten] = injector.feed(frames_of(hello())[0])
    assert msgpack.unpackb(rewritten[12:])["args"][0]["secret"] == KEY


def test_a_big_binary_message_is_not_held_back():
    injector = HelloSecretInjector(KEY)
    big = frames_of(call(0, os.urandom(200_000)), max_size=0)
    assert injector.feed(big[0]) == big


def test_a_client_that_does_not_speak_wslink_is_left_alone():
    injector = HelloSecretInjector(KEY, max_messages=3)
    not_msgpack = b"\xc1" * 20  # 0xc1 is never valid msgpack
    frames = [
        encode_header(1, 0, 1 << 30) + os.urandom(50),  # claims 1 GiB: not a hello
        encode_header(2, 0, len(not_msgpack)) + not_msgpack,
        encode_header(3, 0, 5) + msgpack.packb([1, 2, 3]) + b"\x00",  # msgpack, not a dict
    ]
    for frame in frames:
        assert injector.feed(frame) == [frame]
    assert injector.done
    raw = frames_of(hello())[0]
    assert injector.feed(raw) == [raw]  # no longer looked at


@pytest.mark.parametrize("args", [[], None])
def test_a_hello_without_a_secret_gets_one(args):
    message = hello()
    if args is None:
        del message["args"]
    else:
        message["args"] = args
    [rewritten] = HelloSecretInjector(KEY).feed(frames_of(message)[0])
    assert msgpack.unpackb(rewritten[12:])["args"] == [{"secret": KEY}]


def test_small_binary_frames_that_only_look_like_a_chunk_header_are_not_held():
    injector = HelloSecretInjector(KEY)
    # A header announcing 100 bytes, then content that is not the start of a msgpack map.
    frame = encode_header(7, 0, 100) + b"\x01\x02\x03"
    assert injector.feed(frame) == [frame]
