"""The proxy's data path: bodies and websocket messages go from the read buffer straight to the
other socket, and a browser that reads slowly makes the proxy read slowly, not buffer.

The proxy runs alone in a process of its own (tests/apps/bare_proxy.py), on
uvloop (as ``hpcviz gateway`` runs it) and on asyncio's loop (as an embedded
gateway runs it), so that its memory can be watched while a browser stalls.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from prefect_hpcviz.viz.gateway.proxy import websocket_accept
from prefect_hpcviz.viz.gateway.ws_relay import OP_BINARY, encode_frame

BARE_PROXY = Path(__file__).parent / "apps" / "bare_proxy.py"
MiB = 1024 * 1024
BODY = bytes(range(256)) * (64 * MiB // 256)  # 64 MiB that a shifted or dropped byte would change
QUARTER = len(BODY) // 4  # what /chunked sends
MESSAGE = 4 * MiB
MESSAGES = 16
STALL_S = 1.5  # how long the browser reads nothing (a slow reader, not a readiness wait)
BOUND = 24 * MiB  # the proxy may grow by this much while 64 MiB wait for the browser

LOOPS = ["uvloop", "asyncio"]


async def _backend() -> tuple[web.AppRunner, int]:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/octet-stream")

    async def burst(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        await ws.receive()  # "go"
        for i in range(MESSAGES):
            await ws.send_bytes(bytes([i]) * MESSAGE)
        await ws.receive()  # the browser's close
        return ws

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: chunked on the wire
        await response.prepare(request)
        for i in range(0, QUARTER, 100_000):
            await response.write(BODY[i : min(i + 100_000, QUARTER)])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/burst", burst)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


class BareProxy:
    """tests/apps/bare_proxy.py as a child process; ``rss()`` is its resident memory."""

    def __init__(self, backend_port: int, loop: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BARE_PROXY), str(backend_port), loop],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.process = psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return self.process.memory_info().rss

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _watch_while_stalled(proxy: BareProxy) -> int:
    """The proxy's largest RSS while the browser reads nothing for STALL_S."""
    peak = proxy.rss()
    deadline = time.monotonic() + STALL_S
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        peak = max(peak, proxy.rss())
    return peak


async def _head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


@pytest.fixture
async def backend_port():
    runner, port = await _backend()
    yield port
    await runner.cleanup()


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_slow_browser_gets_a_64_mib_body_whole_while_the_proxy_holds_little_of_it(backend_port, loop):
    proxy = await asyncio.to_thread(BareProxy, backend_port, loop)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # a first request settles the proxy's memory
        await _head(reader)
        first = await asyncio.wait_for(reader.readexactly(len(BODY)), 30)
        assert first == BODY
        before = proxy.rss()

        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await _head(reader)
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {len(BODY)}".encode() in head
        start = await reader.readexactly(MiB)
        peak = await _watch_while_stalled(proxy)
        rest = await asyncio.wait_for(reader.readexactly(len(BODY) - MiB), 30)
        writer.close()
    finally:
        await asyncio.to_thread(proxy.close)
    assert hashlib.sha256(start + rest).digest() == hashlib.sha256(BODY).digest()
    assert peak - before < BOUND, f"the proxy grew by {(peak - before) / MiB:.0f} MiB while the browser stalled"


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_chunked_body_arrives_whole_through_the_read_path(backend_port, loop):
    proxy = await asyncio.to_thread(BareProxy, backend_port, loop)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await _head(reader)
        assert b"Transfer-Encoding: chunked" in head
        body = b""
        while True:  # decode the chunks the proxy sends
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).strip(), 16)
            body += await asyncio.wait_for(reader.readexactly(size + 2), 10)
            body = body[:-2]
            if size == 0:
                break
        writer.close()
    finally:
        await asyncio.to_thread(proxy.close)
    assert body == BODY[:QUARTER]


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_slow_browser_gets_16_websocket_messages_of_4_mib_while_the_proxy_holds_little(backend_port, loop):
    proxy = await asyncio.to_thread(BareProxy, backend_port, loop)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /burst HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()
        )
        head = await _head(reader)
        assert head.startswith(b"HTTP/1.1 101") and websocket_accept(key).encode() in head
        before = proxy.rss()
        writer.write(encode_frame(OP_BINARY, b"go", masked=True))
        peak = await _watch_while_stalled(proxy)
        for i in range(MESSAGES):
            header = await asyncio.wait_for(reader.readexactly(10), 30)
            assert header[0] == 0x80 | OP_BINARY and header[1] == 127
            assert int.from_bytes(header[2:], "big") == MESSAGE
            payload = await asyncio.wait_for(reader.readexactly(MESSAGE), 30)
            assert payload == bytes([i]) * MESSAGE, f"message {i} arrived changed"
        writer.write(encode_frame(0x8, (1000).to_bytes(2, "big"), masked=True))
        writer.close()
    finally:
        await asyncio.to_thread(proxy.close)
    assert peak - before < BOUND, f"the proxy grew by {(peak - before) / MiB:.0f} MiB while the browser stalled"


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_viz_server_that_dies_mid_body_cuts_the_browsers_connection_not_hangs_it(loop):
    sent = 300 * 1024

    async def dies_mid_body(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MiB + b"x" * sent)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(dies_mid_body, "127.0.0.1", 0)
    proxy = await asyncio.to_thread(BareProxy, server.sockets[0].getsockname()[1], loop)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /anything HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await _head(reader)
        body = await asyncio.wait_for(reader.read(), 10)  # until the proxy closes the connection
        writer.close()
    finally:
        await asyncio.to_thread(proxy.close)
        server.close()
    assert head.startswith(b"HTTP/1.1 200") and body == b"x" * sent


@pytest.mark.parametrize("loop", LOOPS)
def test_the_read_buffer_is_lent_to_a_transport_that_keeps_a_view_and_small_writes_are_copied(loop):
    from prefect_hpcviz.viz.gateway.read_buffer import COPY_UNDER, ReadBuffer

    async def scenario() -> None:
        stalled = asyncio.Event()

        async def never_reads(reader, writer):
            await stalled.wait()
            writer.close()

        server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
        transport, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        buffer = ReadBuffer(16 * MiB)
        first = buffer.get()
        buffer.forward(transport, first[:100])  # sent at once: the buffer stays ours
        assert buffer.get() is first
        buffer.forward(transport, first[: 16 * MiB])  # more than the sockets take: a view is kept
        assert transport.get_write_buffer_size() > 0 and buffer.get() is not first
        second = buffer.get()
        buffer.forward(transport, second[: COPY_UNDER - 1])  # a few bytes more are queued as a copy
        assert buffer.get() is second
        transport.abort()
        stalled.set()
        server.close()
        await server.wait_closed()

    if loop == "uvloop":
        import uvloop

        uvloop.run(scenario())
    else:
        asyncio.run(scenario())
