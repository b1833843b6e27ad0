"""The gateway's proxy against direct access and configurable-http-proxy (CHP).

    npm install --prefix .bench configurable-http-proxy   # once; .bench/ is git-ignored
    .venv/bin/python benchmarks/gateway.py [--duration 0.8] [--rounds 3] [--json out.json]

One run, loopback only, stops by itself (about three minutes). The same
small aiohttp echo backend (``backend`` mode of this file) is reached three ways:

- direct:  http://127.0.0.1:<backend port>/...
- gateway: ``python -m prefect_hpcviz.viz.gateway --port P --state-dir D`` as
  its own process; a visualization registered through the REST API with a
  launcher whose ``command`` template starts the backend (which reports ready
  like a viz server), a link opened for the cookie, requests to /s/<id>/...
  So cookie checks, the registry lookup, activity tracking and the wslink
  hello rewriter are all on the measured path.
- chp:     configurable-http-proxy, route /s/<id> added through its REST API
  (``--no-include-prefix``, so the backend sees the same paths).
- nginx:   only with ``--reference nginx``: a tuned C proxy as a yardstick of
  what any proxy can reach on this machine (one process, ``/s/<id>/`` stripped,
  streaming both ways, upstream keep-alive, 256 KiB buffers; ``NGINX_CONF``).

The backend is the very process the gateway launched; direct and CHP use it too
(``--backend-loop uvloop`` runs it on uvloop, for all three alike).
The load generator is a separate process (``client`` mode), the same for all
three targets: by default the lean raw HTTP/1.1 and websocket client of
``gateway_load.py`` on uvloop, which needs a fraction of the CPU per request
that aiohttp's client needs (``--load-client aiohttp``, the earlier load
generator). On 2 cores the load generator, the backend and the proxy share the
CPUs, so what the load generator spends is taken from the proxy under test,
and a heavy one pulls every ratio toward 1.

Pinning (``--pin``, the default when this process may use 3 or more CPUs;
``--no-pin`` to let the scheduler place everything): the proxy under test,
the gateway and CHP alike (each runs alone in its turn), gets the last CPU
this process may use, every thread of it (``sched_setaffinity`` at start, so
the threads it starts later inherit it); the load generator, the echo backend
and this orchestrator get the others. The direct baseline runs the same load
generator and backend on the same CPUs, with nothing on the proxy's. On a
2-core machine that is one core for the proxy and one for load generator plus
backend: the proxies no longer fight the load for a core, so the comparison
is of the proxies, not of the scheduler; but the one load core caps every
target alike, so "x direct" is a ceiling, not a free-running figure. Other
work on the machine is not pinned away; the report states the load average
and how long other processes ran on the proxy's CPU and on the load CPUs
during the measurements (busy time from /proc/stat minus the benchmark's own
processes' CPU time).

Measured:
- HTTP requests/s at 1, 10, 50 concurrent clients (keep-alive, one connection
  each): GET a 100-byte body, GET a 1 MiB body, POST a 1 MiB body;
- websocket round trips/s and MB/s (payload echoed per second, one way) at 1,
  10, 50 connections, binary messages of 64 B and 64 KiB;
- p50/p99 latency and what each proxy adds to it over direct;
- CPU time (user + system, all threads) the proxy process spends per request
  or round trip: the work each proxy does, apart from waiting for a core
  (it still rises when other work shares the machine: caches, switches),
  independent of pinning;
- RSS of the gateway and of CHP with 1,000 open idle websockets, per websocket,
  and whether that memory is reused (open 1,000, close them, open 1,000 again).

Prints markdown tables; ``--json`` also writes every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from gateway_load import LoadError, LoadGenerator, masked_binary_frame

ROOT = Path(__file__).resolve().parent.parent
CHP_JS = ROOT / ".bench" / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
SMALL = 100
BIG = 1024 * 1024
WS_SMALL = 64
WS_BIG = 64 * 1024
CONCURRENCY = (1, 10, 50)
IDLE_SOCKETS = 1000
MiB = 1024 * 1024


# ============================================================== backend mode
def backend_main(argv: list[str]) -> int:
    """The echo backend: reports host:port to --report-url like a viz server."""
    p = argparse.ArgumentParser(prog="gateway.py backend")
    p.add_argument("--report-url", required=True)
    p.add_argument("--max-lifetime", type=float, default=600.0, help="exit after this many seconds")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the backend's event loop")
    args, _ = p.parse_known_args(argv)
    small = b"x" * SMALL
    big = b"y" * BIG

    async def get_small(request: web.Request) -> web.Response:
        return web.Response(body=small, content_type="application/octet-stream")

    async def get_big(request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/octet-stream")

    async def post_sink(request: web.Request) -> web.Response:
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
        return web.Response(text=str(n))

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    async def serve() -> None:
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_get("/small", get_small)
        app.router.add_get("/big", get_big)
        app.router.add_post("/sink", post_sink)
        app.router.add_get("/ws", ws_echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, backlog=2048).start()
        port = sock.getsockname()[1]
        key = os.environ.get("HPCVIZ_SESSION_KEY", "")
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                try:
                    async with s.post(
                        args.report_url,
                        json={"host": "127.0.0.1", "port": port},
                        headers={"Authorization": f"Bearer {key}"},
                    ) as r:
                        print(f"backend on 127.0.0.1:{port}, ready report: {r.status}", flush=True)
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        # Stop by itself: after --max-lifetime, or as soon as the gateway that started it is gone.
        parent = os.getppid()
        deadline = time.monotonic() + args.max_lifetime
        while time.monotonic() < deadline and os.getppid() == parent:
            await asyncio.sleep(0.5)
        await runner.cleanup()

    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())
    return 0


# =============================================================== client mode
def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _summary(latencies: list[float], window: float, errors: int, nbytes: int, ops: int) -> dict:
    latencies.sort()
    return {
        "ops": ops,  # everything completed, warm-up included (for CPU per operation)
        "n": len(latencies),
        "rate": len(latencies) / window,
        "mb_s": nbytes / window / 1e6,
        "p50_ms": _quantile(latencies, 0.50) * 1e3,
        "p99_ms": _quantile(latencies, 0.99) * 1e3,
        "errors": errors,
    }


async def http_cell(cmd: dict) -> dict:
    """``conc`` workers, each one keep-alive connection, looping for warmup + duration."""
    url, method, conc = cmd["url"], cmd["method"], cmd["conc"]
    body = b"z" * cmd["upload"] if cmd["upload"] else None
    expect = cmd["expect"]
    latencies: list[float] = []
    errors = 0
    nbytes = 0
    ops = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + cmd["warmup"]
    end = start + cmd["duration"]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        headers=cmd["headers"],
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:

        async def worker() -> None:
            nonlocal errors, nbytes, ops
            while True:
                t0 = loop.time()
                n = 0
                try:
                    async with session.request(method, url, data=body, allow_redirects=False) as r:
                        async for chunk in r.content.iter_any():
                            n += len(chunk)
                        ok = r.status == 200 and (expect is None or n == expect)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                t1 = loop.time()
                ops += 1
                if t1 >= end:
                    return
                if t1 >= start:  # completed inside the window (a slow request started in the warm-up counts)
                    if ok:
                        latencies.append(t1 - t0)
                        nbytes += n + (len(body) if body else 0)
                    else:
                        errors += 1
                if not ok:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker() for _ in range(conc)))
    return _summary(latencies, cmd["duration"], errors, nbytes, ops)


async def ws_cell(cmd: dict) -> dict:
    """``conc`` websockets, each sending a binary message and waiting for its echo, in a loop."""
    url, conc, size = cmd["url"], cmd["conc"], cmd["size"]
    payload = b"w" * size
    latencies: list[float] = []
    errors = 0
    ops = 0
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(), headers=cmd["headers"]
    ) as session:
        sockets = await asyncio.gather(
            *(session.ws_connect(url, max_msg_size=0, compress=0, autoping=True) for _ in range(conc))
        )
        start = loop.time() + cmd["warmup"]
        end = start + cmd["duration"]

        async def worker(ws) -> None:
            nonlocal errors, ops
            while True:
                t0 = loop.time()
                await ws.send_bytes(payload)
                msg = await ws.receive()
                t1 = loop.time()
                ok = msg.type is aiohttp.WSMsgType.BINARY and len(msg.data) == size
                ops += 1
                if t1 >= end:
                    return
                if t1 >= start:  # completed inside the window (a slow request started in the warm-up counts)
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
                if not ok:
                    return

        await asyncio.gather(*(worker(ws) for ws in sockets))
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return _summary(latencies, cmd["duration"], errors, len(latencies) * size, ops)


async def raw_http_cell(cmd: dict) -> dict:
    """Like :func:`http_cell`, with the lean load generator (raw HTTP/1.1 on uvloop)."""
    conc, expect = cmd["conc"], cmd["expect"]
    gen = LoadGenerator(cmd["url"], cmd["headers"])
    request = gen.request(cmd["method"], b"z" * cmd["upload"] if cmd["upload"] else b"")
    upload = cmd["upload"] or 0
    latencies: list[float] = []
    errors = nbytes = ops = 0
    clock = time.perf_counter  # uvloop's loop.time() counts whole milliseconds
    start = clock() + cmd["warmup"]
    end = start + cmd["duration"]

    async def worker() -> None:
        nonlocal errors, nbytes, ops
        conn = None
        while True:
            t0 = clock()
            try:
                if conn is None or conn.lost:
                    conn = await gen.connect()
                await conn.exchange(request)
                ok = conn.status == 200 and (expect is None or conn.got == expect)
                if conn.headers.get(b"connection", b"").lower() == b"close":
                    conn.transport.close()
                    conn = None
            except (OSError, LoadError):
                ok = False
            t1 = clock()
            ops += 1
            if t1 >= end:
                break
            if t1 >= start:
                if ok:
                    latencies.append(t1 - t0)
                    nbytes += conn.got + upload if conn is not None else upload
                else:
                    errors += 1
            if not ok:
                if conn is not None:
                    conn.transport.close()
                conn = None
                await asyncio.sleep(0.01)
        if conn is not None:
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(conc)))
    return _summary(latencies, cmd["duration"], errors, nbytes, ops)


async def raw_ws_cell(cmd: dict) -> dict:
    """Like :func:`ws_cell`, with the lean load generator (raw websocket frames on uvloop)."""
    conc, size = cmd["conc"], cmd["size"]
    gen = LoadGenerator(cmd["url"], cmd["headers"])
    frame = masked_binary_frame(b"w" * size)
    latencies: list[float] = []
    errors = ops = 0
    clock = time.perf_counter  # uvloop's loop.time() counts whole milliseconds
    sockets = await asyncio.gather(*(gen.websocket() for _ in range(conc)))
    start = clock() + cmd["warmup"]
    end = start + cmd["duration"]

    async def worker(conn) -> None:
        nonlocal errors, ops
        while True:
            t0 = clock()
            try:
                await conn.exchange(frame)
                ok = conn.got == size
            except (OSError, LoadError):
                ok = False
            t1 = clock()
            ops += 1
            if t1 >= end:
                return
            if t1 >= start:
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors += 1
            if not ok:
                return

    await asyncio.gather(*(worker(conn) for conn in sockets))
    for conn in sockets:  # a close frame (1000), then the connection
        conn.transport.write(b"\x88\x82\x00\x00\x00\x00\x03\xe8")
        conn.transport.close()
    return _summary(latencies, cmd["duration"], errors, len(latencies) * size, ops)


class IdleSockets:
    """Holds websockets open between ``ws_open`` and ``ws_close`` commands."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.sockets: list = []

    async def open(self, cmd: dict) -> dict:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(), headers=cmd["headers"]
        )
        failed = 0
        for i in range(0, cmd["n"], 50):
            batch = await asyncio.gather(
                *(
                    self.session.ws_connect(cmd["url"], max_msg_size=0, compress=0, autoping=False)
                    for _ in range(min(50, cmd["n"] - i))
                ),
                return_exceptions=True,
            )
            for ws in batch:
                if isinstance(ws, BaseException):
                    failed += 1
                else:
                    self.sockets.append(ws)
        # Prove they all work end to end (one small round trip each), then leave them idle.
        alive = 0
        for ws in self.sockets:
            await ws.send_bytes(b"p" * 16)
            msg = await asyncio.wait_for(ws.receive(), 10)
            alive += msg.type is aiohttp.WSMsgType.BINARY
        return {"open": len(self.sockets), "alive": alive, "failed": failed}

    async def close(self, cmd: dict) -> dict:
        n = len(self.sockets)
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        self.sockets.clear()
        if self.session is not None:
            await self.session.close()
        return {"closed": n}


async def client_loop(load_client: str) -> None:
    """Read one JSON command per stdin line, answer one JSON line each."""
    idle = IdleSockets()
    cells = {"raw": (raw_http_cell, raw_ws_cell), "aiohttp": (http_cell, ws_cell)}[load_client]
    ops = {"http": cells[0], "ws": cells[1], "ws_open": idle.open, "ws_close": idle.close}
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd = json.loads(line)
        try:
            result = await ops[cmd["op"]](cmd)
        except Exception as exc:  # reported, the orchestrator decides
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


# ============================================================ orchestration
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, headers: dict | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, headers=headers, timeout=2, trust_env=False)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.1)


def backend_pid(session: dict) -> int | None:
    """The echo backend's process id (the local launcher's job id starts with it)."""
    import psutil

    try:
        pid = int(str(session.get("job_id") or "").split(".")[0])
        return pid if "backend" in psutil.Process(pid).cmdline() else None
    except (ValueError, psutil.Error):
        return None


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def pin(pid: int, cpus: set[int]) -> None:
    """Pin a process and every thread it has now to ``cpus`` (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def pinned_to(pid: int) -> str:
    """The CPUs every thread of a process may use, e.g. ``1`` or ``0-1`` (``mixed`` if they differ)."""
    lists = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        lists.update(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
    return lists.pop() if len(lists) == 1 else "mixed: " + ", ".join(sorted(lists))


def plan_pinning(enabled: bool | None) -> dict[str, set[int]] | None:
    """{"proxy": {last CPU}, "load": {the others}}, or None when not pinning.

    By default only with 3 or more CPUs: on 2, the one load core caps the
    faster proxy first and pulls every ratio toward 1 (measured: unpinned
    ratios were higher on this 2-core machine); ``--pin`` forces it on 2.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if enabled is None and len(cpus) < 3:
        return None
    if enabled is False or len(cpus) < 2:
        if enabled:
            print(f"--pin needs 2 CPUs, this process may use {len(cpus)}: not pinning", file=sys.stderr)
        return None
    return {"proxy": {cpus[-1]}, "load": set(cpus[:-1])}


def busy_seconds_per_cpu() -> list[float]:
    """Non-idle CPU seconds of each CPU since boot."""
    import psutil

    return [t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0) for t in psutil.cpu_times(percpu=True)]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process, all its threads."""
    import psutil

    if pid is None:
        return 0.0
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


class Client:
    """The load generator process."""

    def __init__(self, load_client: str = "raw") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "client", load_client],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def call(self, timeout: float = 120.0, **cmd) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            self.proc.kill()
            raise RuntimeError(f"the load generator did not answer {cmd['op']} within {timeout:g} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_gateway(
    state_dir: Path, log_path: Path, wrapper: str | None = None, cpus: set[int] | None = None,
    backend_loop: str = "asyncio",
) -> tuple[subprocess.Popen, str, str, dict, dict, str]:
    """Start the gateway, register the echo backend, open its link.

    Returns (process, base URL, visualization id, cookie header, session, admin token).
    """
    import httpx

    port = free_port()
    launcher = {
        "kind": "local",
        "options": {
            "command": [
                "{python}", str(Path(__file__).resolve()), "backend", "--report-url", "{report_url}", "--loop", backend_loop,
            ]  # fmt: skip
        },
    }
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            sys.executable, *([wrapper] if wrapper else ["-m", "prefect_hpcviz.viz.gateway"]),
            "--port", str(port), "--state-dir", str(state_dir),
            # A default launcher with a command: no standby viz server competing for the CPU.
            "--launcher", json.dumps(launcher),
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    token = (state_dir / "admin_token").read_text().strip()
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, trust_env=False, timeout=30)
    reg = api.post("/api/visualizations", json={"data": "/bench", "title": "bench", "launcher": launcher})
    reg.raise_for_status()
    viz_id, link = reg.json()["id"], reg.json()["link"]
    api.post(f"/api/visualizations/{viz_id}/launch").raise_for_status()
    deadline = time.monotonic() + 30
    while True:
        session = api.get(f"/api/visualizations/{viz_id}").json().get("session") or {}
        if session.get("state") == "ready":
            break
        if session.get("state") in ("failed", "stopped") or time.monotonic() > deadline:
            raise RuntimeError(f"the echo backend did not start through the gateway: {session}")
        time.sleep(0.1)
    opened = httpx.get(link, follow_redirects=False, trust_env=False)
    cookie = opened.cookies.get("hpcviz_auth")
    if opened.status_code != 303 or not cookie:
        raise RuntimeError(f"opening the link gave {opened.status_code}, no cookie")
    api.close()
    return proc, base, viz_id, {"Cookie": f"hpcviz_auth={cookie}"}, session, token


def start_chp(backend: str, viz_id: str, log_path: Path, cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    import httpx

    if not CHP_JS.exists():
        raise SystemExit(f"{CHP_JS} missing: run `npm install --prefix {ROOT / '.bench'} configurable-http-proxy`")
    port, api_port = free_port(), free_port()
    token = os.urandom(16).hex()
    proc = subprocess.Popen(
        [
            "node", str(CHP_JS), "--ip", "127.0.0.1", "--port", str(port),
            "--api-ip", "127.0.0.1", "--api-port", str(api_port), "--no-include-prefix",
        ],  # fmt: skip
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": token},
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    api = f"http://127.0.0.1:{api_port}/api/routes"
    wait_http(api, headers={"Authorization": f"token {token}"})
    r = httpx.post(
        f"{api}/s/{viz_id}", json={"target": backend}, headers={"Authorization": f"token {token}"}, trust_env=False
    )
    r.raise_for_status()
    return proc, f"http://127.0.0.1:{port}"


NGINX_CONF = """\
daemon off;
master_process off;  # one process, like the gateway and CHP: its pid is the one measured
worker_rlimit_nofile 8192;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream viz {{ server {backend}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location /s/{viz_id}/ {{
            proxy_pass http://viz/;  # the prefix stripped, as the gateway and CHP do
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;  # streamed both ways, as the gateway and CHP stream
            proxy_request_buffering off;
            proxy_buffer_size 256k;  # also each upgraded websocket's buffer per direction (default 4k: 16 reads per 64 KiB)
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 256k;
            client_body_buffer_size 256k;  # an unbuffered upload is read and sent in pieces of this size (default 16k)
            client_max_body_size 0;
            proxy_read_timeout 1h;
        }}
    }}
}}
"""


def start_nginx(backend: str, viz_id: str, tmp: Path, cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    """nginx as a reference: a tuned C proxy (one process, streaming both ways, upstream keep-alive)."""
    if shutil.which("nginx") is None:
        raise SystemExit("--reference nginx needs nginx: apt-get install nginx-light")
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, backend=backend.removeprefix("http://"), port=port, viz_id=viz_id))
    checked = subprocess.run(["nginx", "-t", "-q", "-c", str(conf), "-p", str(tmp)], capture_output=True, text=True)
    if checked.returncode:
        raise RuntimeError(f"nginx refused {conf}: {checked.stderr.strip()}")
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(tmp)],
        stdout=open(tmp / "nginx.log", "wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/s/{viz_id}/small")
    return proc, base


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def idle_memory(client: Client, name: str, pid: int, url: str, headers: dict) -> dict:
    """RSS before, with 1,000 idle websockets, after closing them, and with 1,000 again."""
    time.sleep(1.0)  # let the process settle before the first reading
    base = rss(pid)
    rounds = []  # (open result, RSS with the sockets open, RSS after closing them)
    for _ in range(2):  # a second round shows whether closed sockets' memory is reused
        opened = client.call(op="ws_open", url=url, n=IDLE_SOCKETS, headers=headers)
        time.sleep(1.0)
        with_open = rss(pid)
        client.call(op="ws_close")
        time.sleep(2.5)
        rounds.append((opened, with_open, rss(pid)))
    (first, open1, after), (second, open2, after2) = rounds
    ok = first.get("alive") == IDLE_SOCKETS and second.get("alive") == IDLE_SOCKETS
    print(
        f"  {name}: {first} / {second}; RSS {base / MiB:.1f} -> {open1 / MiB:.1f} -> {after / MiB:.1f} "
        f"-> {open2 / MiB:.1f} -> {after2 / MiB:.1f} MiB",
        file=sys.stderr,
    )
    return {
        "ok": ok,
        "base": base,
        "open1": open1,
        "after_close": after,
        "open2": open2,
        "after_close2": after2,
        "per_ws_kib": (open1 - base) / IDLE_SOCKETS / 1024,
        "second_round_per_ws_kib": (open2 - max(after, base)) / IDLE_SOCKETS / 1024,
        "growth_over_first_peak_kib_per_ws": (open2 - open1) / IDLE_SOCKETS / 1024,
    }


HTTP_TESTS = [  # name, method, path, upload, expected response bytes
    ("HTTP GET 100 B", "GET", "/small", 0, SMALL),
    ("HTTP GET 1 MiB", "GET", "/big", 0, BIG),
    ("HTTP POST 1 MiB", "POST", "/sink", BIG, None),
]
WS_TESTS = [("WS 64 B", WS_SMALL), ("WS 64 KiB", WS_BIG)]
TARGETS = ("direct", "gateway", "chp")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def orchestrate(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="hpcviz-bench-gw-"))
    gateway = chp = nginx = None
    targets = TARGETS + (("nginx",) if args.reference == "nginx" else ())
    client = None
    viz_id = gw_base = admin = None
    results: dict = {"cells": [], "memory": {}}
    t_begin = time.monotonic()
    plan = plan_pinning(args.pin)
    proxy_cpus = plan["proxy"] if plan else None
    if plan:  # this process first: the load generator inherits it
        os.sched_setaffinity(0, plan["load"])
    try:
        print("starting the gateway and the echo backend through it...", file=sys.stderr)
        gateway, gw_base, viz_id, cookie, session, admin = start_gateway(
            tmp / "state", tmp / "gateway.log", args.gateway_script, proxy_cpus, args.backend_loop
        )
        backend = f"http://{session['host']}:{session['port']}"
        chp, chp_base = start_chp(backend, viz_id, tmp / "chp.log", proxy_cpus)
        bases = {"direct": (backend, {}), "gateway": (f"{gw_base}/s/{viz_id}", cookie), "chp": (f"{chp_base}/s/{viz_id}", {})}
        pids = {"gateway": gateway.pid, "chp": chp.pid, "direct": backend_pid(session)}
        if "nginx" in targets:
            nginx, nginx_base = start_nginx(backend, viz_id, tmp, proxy_cpus)
            bases["nginx"], pids["nginx"] = (f"{nginx_base}/s/{viz_id}", {}), nginx.pid
        if plan:  # the backend was started by the gateway, so it began on the proxy's CPU
            if pids["direct"] is None:
                raise RuntimeError("cannot pin: the echo backend's process was not found")
            pin(pids["direct"], plan["load"])
        client = Client(args.load_client)
        results["pinning"] = {
            "load generator": pinned_to(client.proc.pid),
            "backend": pinned_to(pids["direct"]) if pids["direct"] else "?",
            "gateway": pinned_to(gateway.pid),
            "chp": pinned_to(chp.pid),
            **({"nginx": pinned_to(nginx.pid)} if nginx else {}),
        } if plan else None
        print(f"pinning: {results['pinning'] or 'off'}", file=sys.stderr)
        proxies, load_side = [pids[t] for t in targets if t != "direct"], [os.getpid(), client.proc.pid, pids["direct"]]
        busy0, loads = busy_seconds_per_cpu(), [os.getloadavg()[0]]
        proxies0, load0 = sum(map(cpu_seconds, proxies)), sum(map(cpu_seconds, load_side))
        wall0 = time.monotonic()
        # Warm every path up once (pool connections, code paths, JIT).
        for t in targets:
            base, headers = bases[t]
            for path, method, upload, expect in (("/small", "GET", 0, SMALL), ("/big", "GET", 0, BIG)):
                r = client.call(op="http", url=base + path, method=method, upload=upload, expect=expect,
                                conc=2, warmup=0.0, duration=0.3, headers=headers)  # fmt: skip
                if r.get("errors") or "error" in r or not r.get("n"):
                    raise RuntimeError(f"{t} {path}: {r}")
            r = client.call(op="ws", url=base.replace("http", "ws", 1) + "/ws", size=WS_SMALL, conc=2,
                            warmup=0.0, duration=0.3, headers=headers)  # fmt: skip
            if r.get("errors") or "error" in r or not r.get("n"):
                raise RuntimeError(f"{t} /ws: {r}")

        print(f"{IDLE_SOCKETS} idle websockets (open, close, open again)...", file=sys.stderr)
        for t in targets if not args.only else ():
            if pids[t] is None:
                continue
            base, headers = bases[t]
            results["memory"][t] = idle_memory(client, t, pids[t], base.replace("http", "ws", 1) + "/ws", headers)

        cells = []
        for name, method, path, upload, expect in HTTP_TESTS:
            for conc in CONCURRENCY:
                cells.append((name, conc, "http", dict(method=method, path=path, upload=upload, expect=expect)))
        for name, size in WS_TESTS:
            for conc in CONCURRENCY:
                cells.append((name, conc, "ws", dict(size=size)))
        cells = [c for c in cells if not args.only or any(o in f"{c[0]} c={c[1]}" for o in args.only)]
        for name, conc, kind, spec in cells:
            row = {"test": name, "conc": conc}
            runs: dict[str, list[dict]] = {t: [] for t in targets}
            # Several short rounds, the order of targets rotating, and the median round kept:
            # drift and other load on the machine then hit all three alike.
            for rnd in range(args.rounds):
                k = (rnd + len(results["cells"])) % len(targets)
                for t in targets[k:] + targets[:k]:
                    base, headers = bases[t]
                    cpu0 = cpu_seconds(pids.get(t))
                    if kind == "http":
                        r = client.call(op="http", url=base + spec["path"], method=spec["method"], upload=spec["upload"],
                                        expect=spec["expect"], conc=conc, warmup=args.warmup, duration=args.duration,
                                        headers=headers)  # fmt: skip
                    else:
                        r = client.call(op="ws", url=base.replace("http", "ws", 1) + "/ws", size=spec["size"],
                                        conc=conc, warmup=args.warmup, duration=args.duration, headers=headers)  # fmt: skip
                    if t != "direct" and r.get("ops"):  # the proxy's own CPU time per request / round trip
                        r["cpu_us"] = (cpu_seconds(pids[t]) - cpu0) / r["ops"] * 1e6
                    runs[t].append(r)
            for t in targets:
                ordered = sorted(runs[t], key=lambda r: r.get("rate", 0))
                row[t] = {**ordered[len(ordered) // 2], "rates": [r.get("rate", 0) for r in runs[t]]}
                row[t]["errors"] = sum(r.get("errors", 0) for r in runs[t])
                cpus = sorted(r["cpu_us"] for r in runs[t] if "cpu_us" in r)
                if cpus:
                    row[t]["cpu_us"] = cpus[len(cpus) // 2]
            results["cells"].append(row)
            loads.append(os.getloadavg()[0])
            print(
                f"  {name:16} c={conc:<3} "
                + "  ".join(f"{t} {row[t].get('rate', 0):9.1f}/s p50 {row[t].get('p50_ms', 0):7.2f} ms" for t in targets),
                file=sys.stderr,
            )
        busy1, wall = busy_seconds_per_cpu(), time.monotonic() - wall0
        proxies_s, load_s = sum(map(cpu_seconds, proxies)) - proxies0, sum(map(cpu_seconds, load_side)) - load0
        cpus_used = sorted(os.sched_getaffinity(0) | (proxy_cpus or set()))
        results["machine"] = {
            "load_1min": {"min": min(loads), "median": sorted(loads)[len(loads) // 2], "max": max(loads)},
            "wall_s": wall,
            "busy_s_per_cpu": {c: busy1[c] - busy0[c] for c in cpus_used},
            "proxies_s": proxies_s,  # gateway + CHP
            "load_side_s": load_s,  # load generator + backend + this orchestrator
        }
        results["gateway_rss_end"] = rss(gateway.pid)
        results["chp_rss_end"] = rss(chp.pid)
        if nginx:
            results["nginx_rss_end"] = rss(nginx.pid)
    finally:
        if client is not None:
            client.close()
        if viz_id is not None:  # revoking stops the backend (which would also end with the gateway)
            try:
                import httpx

                httpx.delete(f"{gw_base}/api/visualizations/{viz_id}", headers={"Authorization": f"Bearer {admin}"},
                             trust_env=False, timeout=30)  # fmt: skip
            except Exception as exc:
                print(f"revoking the benchmark visualization failed: {exc}", file=sys.stderr)
        stop(chp)
        stop(nginx)
        stop(gateway)
        if gateway is not None and args.keep_logs:
            print(f"logs in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = time.monotonic() - t_begin
    results["targets"] = targets
    results["host"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "chp": json.loads((CHP_JS.parent.parent / "package.json").read_text())["version"],
    }
    if nginx:
        results["host"]["nginx"] = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    print_report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def print_report(results: dict, args: argparse.Namespace) -> None:
    h = results["host"]
    targets = results.get("targets", TARGETS)
    pinning = results.get("pinning")
    where = (
        f"pinned: proxy on CPU {pinning['gateway']} (CHP {pinning['chp']}), load generator on {pinning['load generator']}, "
        f"backend on {pinning['backend']}"
        if pinning
        else "not pinned: load generator, proxy and backend share them"
    )
    flag = "" if pinning or h["cpus"] < 2 else " --no-pin"
    flag += " --load-client aiohttp" if args.load_client == "aiohttp" else ""
    flag += " --backend-loop uvloop" if args.backend_loop == "uvloop" else ""
    flag += " --reference nginx" if "nginx" in targets else ""
    client = "raw HTTP/websocket client on uvloop" if args.load_client == "raw" else "aiohttp client"
    print(
        f"\n`.venv/bin/python benchmarks/gateway.py --duration {args.duration:g} --rounds {args.rounds}{flag}` — loopback, {h['cpus']} CPUs, "
        f"{where}; load generator: {client}; Python {h['python']}, aiohttp {h['aiohttp']}, node {h['node']}, CHP {h['chp']}; "
        f"{results['seconds']:.0f} s."
    )
    m = results.get("machine")
    if m:
        load = m["load_1min"]
        busy = m["busy_s_per_cpu"]
        wall = m["wall_s"]
        if pinning:  # each side's own CPUs: what else ran there is the busy time minus ours
            proxy_cpu = max(int(c) for c in busy)
            on_proxy = max(0.0, busy[proxy_cpu] - m["proxies_s"])
            on_load = max(0.0, sum(b for c, b in busy.items() if c != proxy_cpu) - m["load_side_s"])
            others = (
                f"other processes ran on the proxy's CPU {on_proxy / wall:.0%} of the time and "
                f"on the load CPUs {on_load / wall:.0%} of one CPU's time"
            )
        else:
            rest = max(0.0, sum(busy.values()) - m["proxies_s"] - m["load_side_s"])
            others = f"other processes ran {rest / wall:.0%} of one CPU's time"
        print(
            f"Machine during the measurements ({wall:.0f} s): 1-minute load average {load['min']:.1f}-{load['max']:.1f} "
            f"(median {load['median']:.1f}); CPUs busy "
            + ", ".join(f"CPU {c} {b / wall:.0%}" for c, b in busy.items())
            + f"; {others}.\n"
        )
    print("| test | conc. | direct | gateway | CHP | gateway / CHP | gateway / direct | CHP / direct |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["cells"]:
        d, g, c = (row[t] for t in TARGETS)
        unit = "req/s" if row["test"].startswith("HTTP") else "rt/s"
        err = "".join(f" ({t}: {row[t].get('errors') or row[t].get('error')} errors)" for t in targets if row[t].get("errors") or row[t].get("error"))
        mb = ""
        if row["test"] != "HTTP GET 100 B" and row["test"] != "WS 64 B":
            mb = f" · {g['mb_s']:,.0f} MB/s"
        print(
            f"| {row['test']}{err} | {row['conc']} | {fmt_rate(d['rate'])} {unit} | {fmt_rate(g['rate'])}{mb} | "
            f"{fmt_rate(c['rate'])} | {ratio(g['rate'], c['rate'])} | {ratio(g['rate'], d['rate'])} | "
            f"{ratio(c['rate'], d['rate'])} |"
        )
    print("\nWebsocket MB/s (payload echoed per second):\n")
    print("| test | conc. | direct MB/s | gateway MB/s | CHP MB/s | gateway / CHP |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in results["cells"]:
        if row["test"].startswith("WS"):
            d, g, c = (row[t] for t in TARGETS)
            print(f"| {row['test']} | {row['conc']} | {d['mb_s']:.1f} | {g['mb_s']:.1f} | {c['mb_s']:.1f} | {ratio(g['mb_s'], c['mb_s'])} |")
    print("\nLatency (ms): direct p50/p99, and what each proxy adds to them:\n")
    print("| test | conc. | direct p50 / p99 | gateway adds p50 / p99 | CHP adds p50 / p99 | added p50 gateway / CHP |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in results["cells"]:
        d, g, c = (row[t] for t in TARGETS)
        gp50, gp99 = g["p50_ms"] - d["p50_ms"], g["p99_ms"] - d["p99_ms"]
        cp50, cp99 = c["p50_ms"] - d["p50_ms"], c["p99_ms"] - d["p99_ms"]
        print(
            f"| {row['test']} | {row['conc']} | {d['p50_ms']:.3f} / {d['p99_ms']:.3f} | {gp50:+.3f} / {gp99:+.3f} | "
            f"{cp50:+.3f} / {cp99:+.3f} | {ratio(gp50, cp50) if cp50 > 0 else '-'} |"
        )
    print("\nCPU time of the proxy process per request / round trip (µs, user + system, median round,")
    print("warm-up included): the work each proxy does, apart from waiting for the CPU:\n")
    print("| test | conc. | gateway µs | CHP µs | CHP / gateway |")
    print("|---|---:|---:|---:|---:|")
    for row in results["cells"]:
        g, c = row["gateway"].get("cpu_us"), row["chp"].get("cpu_us")
        if g and c:
            print(f"| {row['test']} | {row['conc']} | {g:,.0f} | {c:,.0f} | {c / g:.2f}x |")
    if "nginx" in targets:
        print_reference(results["cells"], h.get("nginx", "nginx"))
    m = results["memory"]
    print(f"\n{IDLE_SOCKETS:,} idle websockets (RSS of the proxy process, MiB):\n")
    print("| proxy | before | 1,000 open | closed | 1,000 open again | closed | KiB per websocket | 2nd round above 1st peak, KiB/ws |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        if t not in m:
            continue
        r = m[t]
        print(
            f"| {t}{'' if r['ok'] else ' (NOT ALL OPENED)'} | {r['base'] / MiB:.1f} | {r['open1'] / MiB:.1f} | {r['after_close'] / MiB:.1f} | "
            f"{r['open2'] / MiB:.1f} | {r['after_close2'] / MiB:.1f} | {r['per_ws_kib']:.1f} | "
            f"{r['growth_over_first_peak_kib_per_ws']:+.1f} |"
        )
    if "gateway" in m and "chp" in m:
        print(f"\n\"direct\" is the backend's own RSS (aiohttp server side only). Per websocket gateway / CHP: "
              f"{ratio(m['gateway']['per_ws_kib'], m['chp']['per_ws_kib'])}.")
    print(f"RSS at the end: gateway {results['gateway_rss_end'] / MiB:.1f} MiB, CHP {results['chp_rss_end'] / MiB:.1f} MiB"
          + (f", nginx {results['nginx_rss_end'] / MiB:.1f} MiB." if "nginx_rss_end" in results else "."))


def print_reference(cells: list[dict], version: str) -> None:
    """nginx beside the gateway and CHP: how far a tuned C proxy gets on the same cores."""
    print(f"\nReference: nginx ({version.removeprefix('nginx version: ')}), one process, streaming both ways, "
          "upstream keep-alive; rates and the proxy's CPU per request / round trip (µs):\n")
    print("| test | conc. | gateway | CHP | nginx | gateway / CHP | nginx / CHP | gateway / nginx | CPU µs: gateway / CHP / nginx |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in cells:
        g, c, n = (row[t] for t in ("gateway", "chp", "nginx"))
        cpu = " / ".join(f"{r['cpu_us']:,.0f}" if r.get("cpu_us") else "-" for r in (g, c, n))
        print(
            f"| {row['test']} | {row['conc']} | {fmt_rate(g['rate'])} | {fmt_rate(c['rate'])} | {fmt_rate(n['rate'])} | "
            f"{ratio(g['rate'], c['rate'])} | {ratio(n['rate'], c['rate'])} | {ratio(g['rate'], n['rate'])} | {cpu} |"
        )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "backend":
        return backend_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        load_client = sys.argv[2] if len(sys.argv) > 2 else "raw"
        if load_client == "raw":  # the lean load generator runs on uvloop
            import uvloop

            uvloop.run(client_loop(load_client))
        else:
            asyncio.run(client_loop(load_client))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=0.8, help="seconds measured per round of a cell (default 0.8)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per cell; the median round is reported (default 3)")
    p.add_argument("--warmup", type=float, default=0.2, help="seconds run before measuring each cell")
    p.add_argument("--json", help="also write all figures to this file")
    p.add_argument("--only", action="append", help="run only tests whose 'NAME c=N' contains this (repeatable; skips the memory test)")
    p.add_argument("--gateway-script", help="run this script with the gateway's options instead of -m prefect_hpcviz.viz.gateway (for experiments)")
    p.add_argument(
        "--load-client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="load generator: raw HTTP/1.1 and websocket frames on uvloop (default; little CPU per request, "
        "so more is left for the proxies), or aiohttp's client (as before: several times the CPU per request)",
    )
    p.add_argument(
        "--backend-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the aiohttp echo backend (default asyncio's, as a trame/wslink viz server runs)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the gateway's and CHP's logs")
    p.add_argument(
        "--reference",
        choices=("nginx",),
        help="also measure nginx (one process, streaming, upstream keep-alive) on the same cells: "
        "how far a tuned C proxy gets on this machine (needs nginx on PATH)",
    )
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="proxy under test on the last CPU, load generator and backend on the others "
        "(default: on when 2 or more CPUs may be used)",
    )
    return orchestrate(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
