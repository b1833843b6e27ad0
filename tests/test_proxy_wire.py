"""The proxy's wire-level parts: frames split anywhere, chunked bodies, and viz servers
that misbehave in ways the echo server of test_proxy.py never does.

Real sockets throughout: the proxy runs in a small aiohttp server; the viz
servers are either aiohttp servers or raw asyncio servers that say exactly
the bytes a test needs.
"""

from __future__ import annotations

import asyncio
import os
import random

import aiohttp
import pytest
from aiohttp import web

from prefect_hpcviz.viz.gateway.http_upstream import _ChunkedBody, parse_response_head
from prefect_hpcviz.viz.gateway.proxy import ReverseProxy, build_target, websocket_accept
from prefect_hpcviz.viz.gateway.ws_relay import (
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    FrameScanner,
    MessageTooBig,
    encode_frame,
    parse_frame,
)


# ------------------------------------------------------------------ pure parts
def test_the_frame_scanner_finds_every_frame_however_the_stream_is_split():
    rnd = random.Random(7)
    frames, payload = [], 0
    for size in (0, 5, 125, 126, 127, 65535, 65536, 70000, 3):
        for masked in (False, True):
            frames.append(encode_frame(OP_BINARY if size % 2 else OP_TEXT, os.urandom(size), masked=masked))
            payload += size
    frames.append(encode_frame(OP_CLOSE, (4001).to_bytes(2, "big") + b"bye", masked=True))  # not payload
    stream = b"".join(frames)
    for _ in range(20):
        scanner, seen, i = FrameScanner(max_message=1 << 20), 0, 0
        while i < len(stream):
            step = rnd.choice((1, 2, 3, 7, 100, 4096, 70000))
            seen += scanner.scan(stream[i : i + step])
            i += step
        assert seen == payload and scanner.close_seen and scanner.at_boundary
    half = FrameScanner(max_message=1 << 20)
    half.scan(stream[: len(frames[0]) + 1])  # one byte into the second frame's header
    assert not half.at_boundary


def test_the_frame_scanner_refuses_an_oversized_message_at_its_header():
    scanner = FrameScanner(max_message=1000)
    scanner.scan(encode_frame(OP_BINARY, b"x" * 1000, masked=False))
    with pytest.raises(MessageTooBig):
        scanner.scan(encode_frame(OP_BINARY, b"x" * 1001, masked=False)[:4])


def test_a_masked_frame_decodes_to_its_payload():
    buf = bytearray(encode_frame(OP_BINARY, b"hello wslink", masked=True))
    assert parse_frame(buf) == (True, OP_BINARY, b"hello wslink", len(buf))
    assert parse_frame(buf[:-1]) is None


def test_a_chunked_body_decodes_with_extensions_and_trailers_split_at_every_byte():
    wire = b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
    for cut in range(len(wire) + 1):
        decoder, out = _ChunkedBody(), []
        done = decoder.feed(wire[:cut], out)
        done = decoder.feed(wire[cut:], out) or done
        assert done and b"".join(out) == b"hello" + b"z" * 26


def test_a_bad_chunk_size_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="chunk size"):
        _ChunkedBody().feed(b"zz\r\n", [])


def test_response_heads_lose_hop_by_hop_headers_and_those_named_in_connection():
    head = parse_response_head(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nTransfer-Encoding: chunked"
    )
    assert head.headers == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert head.chunked and not head.keep_alive and head.length is None
    with pytest.raises(ValueError, match="Content-Length"):
        parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2")
    with pytest.raises(ValueError, match="status line"):
        parse_response_head(b"SSH-2.0-OpenSSH_9.2")


# ------------------------------------------------------------ proxy in a server
async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


class Gateway:
    """ReverseProxy behind an aiohttp server, forwarding everything to one backend port."""

    def __init__(self, backend_port: int, **options) -> None:
        self.backend_port = backend_port
        self.proxy = ReverseProxy(**options)
        self.relays: list = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = build_target("127.0.0.1", self.backend_port, request.raw_path.partition("?")[0])
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.proxy.websocket(request, target, on_open=self.relays.append)
        return await self.proxy.http(request, target)

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner, port = await _serve(app)
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc) -> None:
        await self.proxy.close()
        await self.runner.cleanup()


async def test_a_kept_alive_connection_the_viz_server_dropped_is_retried_on_a_new_one():
    connections = 0

    async def one_answer_per_connection(reader, writer):
        # Answers the first request, then closes when the second arrives (its keep-alive
        # timer fired just then): the proxy must retry, not report the server as gone.
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(one_answer_per_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, Gateway(port) as url, aiohttp.ClientSession() as browser:
        for _ in range(3):
            async with browser.get(f"{url}/x") as r:
                assert (r.status, await r.read()) == (200, b"ok")
    assert connections == 3


async def test_an_invalid_answer_from_the_viz_server_is_a_502_that_says_so():
    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    async with server, Gateway(server.sockets[0].getsockname()[1]) as url, aiohttp.ClientSession() as browser:
        async with browser.get(f"{url}/x") as r:
            assert r.status == 502 and "Content-Length" in (await r.json())["error"]


async def test_a_viz_server_that_vanishes_mid_websocket_gives_the_browser_a_1001_close():
    async def accept_then_vanish(reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        key = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-key"))
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {websocket_accept(key)}\r\n\r\n".encode()
            + encode_frame(OP_TEXT, b"hello", masked=False)
        )
        await writer.drain()
        await reader.read(1)  # the browser's first frame, then the server is gone
        writer.transport.abort()

    server = await asyncio.start_server(accept_then_vanish, "127.0.0.1", 0)
    async with server, Gateway(server.sockets[0].getsockname()[1]) as url, aiohttp.ClientSession() as browser:
        async with browser.ws_connect(f"{url}/ws", autoclose=False) as ws:
            assert await ws.receive_str(timeout=5) == "hello"  # sent right after the 101: not lost
            await ws.send_str("anyone?")
            msg = await ws.receive(timeout=5)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)


async def _echo_backend(closes: list) -> web.Application:
    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(msg.data) if msg.type is aiohttp.WSMsgType.BINARY else await ws.send_str(msg.data)
        closes.append(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    return app


async def test_closing_a_relay_closes_both_sides_with_its_code_and_reason():
    closes: list = []
    backend, port = await _serve(await _echo_backend(closes))
    gateway = Gateway(port)
    try:
        async with gateway as url, aiohttp.ClientSession() as browser:
            async with browser.ws_connect(f"{url}/ws", autoclose=False) as ws:
                await ws.send_bytes(b"ping")
                assert await ws.receive_bytes(timeout=5) == b"ping"
                [relay] = gateway.relays
                closing = asyncio.ensure_future(relay.close(4000, b"session stopped"))
                msg = await ws.receive(timeout=5)
                assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4000, "session stopped")
                await ws.close()
                await asyncio.wait_for(closing, 6)
            deadline = asyncio.get_running_loop().time() + 5
            while closes != [4000]:
                assert asyncio.get_running_loop().time() < deadline, closes
                await asyncio.sleep(0.02)
    finally:
        await backend.cleanup()


async def test_a_message_over_the_limit_is_refused_with_1009_and_smaller_ones_pass():
    closes: list = []
    backend, port = await _serve(await _echo_backend(closes))
    try:
        async with Gateway(port, max_ws_message=4096) as url, aiohttp.ClientSession() as browser:
            async with browser.ws_connect(f"{url}/ws", autoclose=False, max_msg_size=0) as ws:
                await ws.send_bytes(b"a" * 4096)
                assert await ws.receive_bytes(timeout=5) == b"a" * 4096
                await ws.send_bytes(b"b" * 4097)
                msg = await ws.receive(timeout=5)
                assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    finally:
        await backend.cleanup()


async def test_idle_websockets_leave_no_tasks_behind_once_closed():
    closes: list = []
    backend, port = await _serve(await _echo_backend(closes))
    try:
        async with Gateway(port) as url, aiohttp.ClientSession() as browser:
            before = len(asyncio.all_tasks())
            sockets = [await browser.ws_connect(f"{url}/ws") for _ in range(20)]
            for ws in sockets:
                await ws.send_bytes(b"x")
                assert await ws.receive_bytes(timeout=5) == b"x"
            for ws in sockets:
                await ws.close()
            deadline = asyncio.get_running_loop().time() + 5
            while len(closes) < 20 or len(asyncio.all_tasks()) > before:
                assert asyncio.get_running_loop().time() < deadline, (len(closes), len(asyncio.all_tasks()), before)
                await asyncio.sleep(0.02)
    finally:
        await backend.cleanup()


async def test_a_browser_that_vanishes_mid_upload_closes_the_viz_server_connection():
    started, ended = asyncio.Event(), asyncio.Event()

    async def slow_reader(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        started.set()
        await reader.read()  # the body never completes: EOF when the proxy gives up
        ended.set()
        writer.close()

    server = await asyncio.start_server(slow_reader, "127.0.0.1", 0)
    async with server, Gateway(server.sockets[0].getsockname()[1]) as url:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.wait_for(started.wait(), 5)  # the upload reached the viz server
        writer.transport.abort()
        await asyncio.wait_for(ended.wait(), 5)


async def _frames_until_eof(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every frame a raw client reads until the connection ends."""
    data = await asyncio.wait_for(reader.read(), 10)
    buf, frames = bytearray(data), []
    while (frame := parse_frame(buf)) is not None:
        frames.append((frame[1], frame[2]))
        del buf[: frame[3]]
    return frames


async def test_a_relay_closed_by_the_gateway_sends_the_browser_exactly_one_close_frame():
    closes: list = []
    backend, port = await _serve(await _echo_backend(closes))
    gateway = Gateway(port)
    try:
        async with gateway as url:
            reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            writer.write(
                f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            deadline = asyncio.get_running_loop().time() + 5
            while not gateway.relays:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            closing = asyncio.ensure_future(gateway.relays[0].close(1001, b"the viz server was stopped"))
            frames = await _frames_until_eof(reader)  # the backend answers our close; that answer stays
            await closing
            assert frames == [(OP_CLOSE, (1001).to_bytes(2, "big") + b"the viz server was stopped")]
            writer.close()
    finally:
        await backend.cleanup()
