"""`python -m prefect_hpcviz.viz.serve`: what a viz server job runs on a compute node.

Each test starts the real command as a subprocess and talks to it over real
sockets: a small aiohttp receiver stands in for the gateway's readiness
endpoint, and a websocket client speaks wslink's own framing.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgpack
import pytest
from aiohttp import web
from wslink.chunking import UnChunker, generate_chunks

from tests.helpers import free_port

KEY = secrets.token_urlsafe(24)
STARTUP_DEADLINE_S = 60



@pytest.fixture(scope="module")
def reduced_dir(small_reduced) -> Path:
    return small_reduced.path


@dataclass
class Receiver:
    """The gateway's readiness endpoint: records each POST."""

    url: str = ""
    reports: list[tuple[str, dict]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.reports.append((request.headers.get("Authorization", ""), await request.json()))
        self.arrived.set()
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver():
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/api/sessions/abc/ready", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    recv.url = f"http://127.0.0.1:{port}/api/sessions/abc/ready"
    yield recv
    await runner.cleanup()


async def serve(*args: str, key: str | None = KEY) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "HPCVIZ_SESSION_KEY"}
    if key is not None:
        env["HPCVIZ_SESSION_KEY"] = key
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "prefect_hpcviz.viz.serve", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, deadline_s: float) -> tuple[int, str, str]:
    """Wait for the process to exit by itself; kill it (and fail) past the deadline."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), deadline_s)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"serve did not exit within {deadline_s} s:\n{err.decode()}")
    return proc.returncode, out.decode(), err.decode()


async def hello(ws: aiohttp.ClientWebSocketResponse, secret: str) -> dict:
    """Send wslink's hello with ``secret``; return the server's answer."""
    message = {"wslink": "1.0", "id": "system:c0:0", "method": "wslink.hello",
               "args": [{"secret": secret}], "kwargs": {}}
    for chunk in generate_chunks(msgpack.packb(message), 0):
        await ws.send_bytes(chunk)
    unchunker = UnChunker()
    while True:
        frame = await asyncio.wait_for(ws.receive(), 10)
        assert frame.type == aiohttp.WSMsgType.BINARY, frame
        answer = unchunker.process_chunk(frame.data)
        if answer is not None and answer.get("id") == "system:c0:0":
            return answer


async def test_serve_reports_its_port_checks_the_key_and_exits_when_idle(reduced_dir, receiver):
    idle_timeout = 4
    proc = await serve("--app", "explorer", "--data", str(reduced_dir), "--host", "127.0.0.1",
                       "--port", "0", "--report-url", receiver.url, "--idle-timeout", str(idle_timeout))
    try:
        await asyncio.wait_for(receiver.arrived.wait(), STARTUP_DEADLINE_S)
    except asyncio.TimeoutError:
        proc.kill()
        pytest.fail(f"no readiness report:\n{(await proc.communicate())[1].decode()}")

    authorization, body = receiver.reports[0]
    assert authorization == f"Bearer {KEY}"
    assert body["host"] == "127.0.0.1"
    port = body["port"]
    assert isinstance(port, int) and port > 0

    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert b"explorer" in cmdline
    assert KEY.encode() not in cmdline

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}/ws") as intruder:
            refused = await hello(intruder, "not-the-key")
            assert refused["error"]["message"] == "Authentication failed"

            async with http.get(f"http://127.0.0.1:{port}/") as page:
                assert page.status == 200
                assert '<div id="app">' in await page.text()

            async with http.ws_connect(f"ws://127.0.0.1:{port}/ws") as client:
                accepted = await hello(client, KEY)
                assert "error" not in accepted
                assert accepted["result"]["clientID"]
    closed_at = time.monotonic()

    rc, out, err = await finish(proc, idle_timeout + 30)
    idle_for = time.monotonic() - closed_at
    assert rc == 0, err
    assert f"hpcviz-serve: ready on http://127.0.0.1:{port}/" in out.splitlines()
    assert "renders on the CPU: llvmpipe" in err or "renders on the GPU: " in err  # which OpenGL, in the job's log
    assert idle_for > idle_timeout - 1  # it waited for the idle timeout, not less
    assert KEY not in out + err


async def test_data_that_cannot_be_opened_exits_non_zero_before_binding(tmp_path, receiver):
    missing = tmp_path / "nowhere" / "simulation.pvd"
    proc = await serve("--app", "explorer", "--data", str(missing), "--report-url", receiver.url)

    rc, out, err = await finish(proc, STARTUP_DEADLINE_S)

    assert rc == 2
    assert str(missing) in err
    assert "ready on" not in out
    assert receiver.reports == []


async def test_serve_refuses_to_start_without_a_session_key(reduced_dir):
    proc = await serve("--data", str(reduced_dir), key=None)

    rc, out, err = await finish(proc, STARTUP_DEADLINE_S)

    assert rc == 2
    assert "HPCVIZ_SESSION_KEY" in err and "--key-file" in err
    assert "ready on" not in out


async def test_a_gateway_that_never_answers_stops_the_server(reduced_dir, tmp_path):
    dead_port = free_port()  # a port nobody listens on
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    report_url = f"http://127.0.0.1:{dead_port}/api/sessions/abc/ready"

    proc = await serve("--data", str(reduced_dir), "--key-file", str(key_file),
                       "--report-url", report_url, "--report-timeout", "2", key=None)
    rc, out, err = await finish(proc, STARTUP_DEADLINE_S)

    assert "ready on http://127.0.0.1:" in out  # it did start, then gave up
    assert rc == 3
    assert report_url in err and "did not take the readiness report" in err


# ------------------------------------------------------------------ standby
async def standby(*, key_in_env: bool = False) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "HPCVIZ_SESSION_KEY"}
    if key_in_env:
        env["HPCVIZ_SESSION_KEY"] = KEY
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "prefect_hpcviz.viz.serve", "--standby", "--app", "explorer",
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def read_until(stream: asyncio.StreamReader, marker: str, deadline_s: float) -> str:
    """Lines of ``stream`` up to the one holding ``marker``; fails past the deadline or at EOF."""
    seen = ""
    deadline = time.monotonic() + deadline_s
    while marker not in seen:
        line = await asyncio.wait_for(stream.readline(), max(0.1, deadline - time.monotonic()))
        assert line, f"stream ended before {marker!r}:\n{seen}"
        seen += line.decode()
    return seen


async def test_a_standby_serves_the_session_it_reads_from_stdin(reduced_dir, receiver, tmp_path):
    proc = await standby()
    try:
        prepared = await read_until(proc.stderr, "standby for explorer, prepared", STARTUP_DEADLINE_S)
        assert "error" not in prepared

        assignment = {
            "argv": ["--app", "explorer", "--data", str(reduced_dir), "--report-url", receiver.url,
                     "--idle-timeout", "2"],
            "env": {"HPCVIZ_SESSION_KEY": KEY},
            "cwd": str(tmp_path),
        }  # fmt: skip
        proc.stdin.write((json.dumps(assignment) + "\n").encode())
        await proc.stdin.drain()
        proc.stdin.close()
        await asyncio.wait_for(receiver.arrived.wait(), STARTUP_DEADLINE_S)
    except BaseException:
        proc.kill()
        raise

    authorization, body = receiver.reports[0]
    assert authorization == f"Bearer {KEY}"
    assert Path(f"/proc/{proc.pid}/cwd").resolve() == tmp_path.resolve()
    for secret_free in ("cmdline", "environ"):
        assert KEY.encode() not in Path(f"/proc/{proc.pid}/{secret_free}").read_bytes()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{body['port']}/") as page:
            assert page.status == 200
        async with http.ws_connect(f"ws://127.0.0.1:{body['port']}/ws") as intruder:
            assert (await hello(intruder, "not-the-key"))["error"]["message"] == "Authentication failed"
        async with http.ws_connect(f"ws://127.0.0.1:{body['port']}/ws") as client:
            assert "error" not in await hello(client, KEY)

    rc, out, err = await finish(proc, 2 + 30)
    assert rc == 0, err
    assert f"ready on http://127.0.0.1:{body['port']}/" in out
    assert KEY not in out + err


async def test_a_standby_whose_stdin_ends_exits_quietly(reduced_dir):
    proc = await standby(key_in_env=False)
    proc.stdin.close()  # the backend stopped (or died) before any click

    rc, out, err = await finish(proc, STARTUP_DEADLINE_S)

    assert rc == 0, err
    assert "error" not in err and "ready on" not in out


async def test_a_standby_given_garbage_says_what_it_expects(tmp_path):
    proc = await standby()
    proc.stdin.write(b"--data /tmp/x\n")
    proc.stdin.close()

    rc, _, err = await finish(proc, STARTUP_DEADLINE_S)

    assert rc == 2
    assert '{"argv": [...]' in err
