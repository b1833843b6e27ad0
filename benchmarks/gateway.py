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

The backend is the very process the gateway launched; direct and CHP use it too.
The load generator is a separate process (``client`` mode, aiohttp). The
machine may have only 2 cores: client, proxy and backend share them, so
absolute figures are low and the ratios are what to compare.

Measured:
- HTTP requests/s at 1, 10, 50 concurrent clients (keep-alive, one connection
  each): GET a 100-byte body, GET a 1 MiB body, POST a 1 MiB body;
- websocket round trips/s and MB/s (payload echoed per second, one way) at 1,
  10, 50 connections, binary messages of 64 B and 64 KiB;
- p50/p99 latency and what each proxy adds to it over direct;
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

    asyncio.run(serve())
    return 0


# =============================================================== client mode
def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _summary(latencies: list[float], window: float, errors: int, nbytes: int) -> dict:
    latencies.sort()
    return {
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
            nonlocal errors, nbytes
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
                if t1 >= end:
                    return
                if t0 >= start:
                    if ok:
                        latencies.append(t1 - t0)
                        nbytes += n + (len(body) if body else 0)
                    else:
                        errors += 1
                if not ok:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker() for _ in range(conc)))
    return _summary(latencies, cmd["duration"], errors, nbytes)


async def ws_cell(cmd: dict) -> dict:
    """``conc`` websockets, each sending a binary message and waiting for its echo, in a loop."""
    url, conc, size = cmd["url"], cmd["conc"], cmd["size"]
    payload = b"w" * size
    latencies: list[float] = []
    errors = 0
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
            nonlocal errors
            while True:
                t0 = loop.time()
                await ws.send_bytes(payload)
                msg = await ws.receive()
                t1 = loop.time()
                ok = msg.type is aiohttp.WSMsgType.BINARY and len(msg.data) == size
                if t1 >= end:
                    return
                if t0 >= start:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
                if not ok:
                    return

        await asyncio.gather(*(worker(ws) for ws in sockets))
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return _summary(latencies, cmd["duration"], errors, len(latencies) * size)


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


async def client_loop() -> None:
    """Read one JSON command per stdin line, answer one JSON line each."""
    idle = IdleSockets()
    ops = {"http": http_cell, "ws": ws_cell, "ws_open": idle.open, "ws_close": idle.close}
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


class Client:
    """The load generator process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "client"],
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


def start_gateway(state_dir: Path, log_path: Path, wrapper: str | None = None) -> tuple[subprocess.Popen, str, str, dict, dict, str]:
    """Start the gateway, register the echo backend, open its link.

    Returns (process, base URL, visualization id, cookie header, session, admin token).
    """
    import httpx

    port = free_port()
    launcher = {
        "kind": "local",
        "options": {
            "command": ["{python}", str(Path(__file__).resolve()), "backend", "--report-url", "{report_url}"]
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


def start_chp(backend: str, viz_id: str, log_path: Path) -> tuple[subprocess.Popen, str]:
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
    )
    api = f"http://127.0.0.1:{api_port}/api/routes"
    wait_http(api, headers={"Authorization": f"token {token}"})
    r = httpx.post(
        f"{api}/s/{viz_id}", json={"target": backend}, headers={"Authorization": f"token {token}"}, trust_env=False
    )
    r.raise_for_status()
    return proc, f"http://127.0.0.1:{port}"


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
    gateway = chp = None
    client = None
    viz_id = gw_base = admin = None
    results: dict = {"cells": [], "memory": {}}
    t_begin = time.monotonic()
    try:
        print("starting the gateway and the echo backend through it...", file=sys.stderr)
        gateway, gw_base, viz_id, cookie, session, admin = start_gateway(tmp / "state", tmp / "gateway.log", args.gateway_script)
        backend = f"http://{session['host']}:{session['port']}"
        chp, chp_base = start_chp(backend, viz_id, tmp / "chp.log")
        bases = {"direct": (backend, {}), "gateway": (f"{gw_base}/s/{viz_id}", cookie), "chp": (f"{chp_base}/s/{viz_id}", {})}
        pids = {"gateway": gateway.pid, "chp": chp.pid}
        client = Client()
        # Warm every path up once (pool connections, code paths, JIT).
        for t in TARGETS:
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
        pids["direct"] = backend_pid(session)
        for t in ("direct", "gateway", "chp") if not args.only else ():
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
            runs: dict[str, list[dict]] = {t: [] for t in TARGETS}
            # Several short rounds, the order of targets rotating, and the median round kept:
            # drift and other load on the machine then hit all three alike.
            for rnd in range(args.rounds):
                k = (rnd + len(results["cells"])) % len(TARGETS)
                for t in TARGETS[k:] + TARGETS[:k]:
                    base, headers = bases[t]
                    if kind == "http":
                        r = client.call(op="http", url=base + spec["path"], method=spec["method"], upload=spec["upload"],
                                        expect=spec["expect"], conc=conc, warmup=args.warmup, duration=args.duration,
                                        headers=headers)  # fmt: skip
                    else:
                        r = client.call(op="ws", url=base.replace("http", "ws", 1) + "/ws", size=spec["size"],
                                        conc=conc, warmup=args.warmup, duration=args.duration, headers=headers)  # fmt: skip
                    runs[t].append(r)
            for t in TARGETS:
                ordered = sorted(runs[t], key=lambda r: r.get("rate", 0))
                row[t] = {**ordered[len(ordered) // 2], "rates": [r.get("rate", 0) for r in runs[t]]}
                row[t]["errors"] = sum(r.get("errors", 0) for r in runs[t])
            results["cells"].append(row)
            print(
                f"  {name:16} c={conc:<3} "
                + "  ".join(f"{t} {row[t].get('rate', 0):9.1f}/s p50 {row[t].get('p50_ms', 0):7.2f} ms" for t in TARGETS),
                file=sys.stderr,
            )
        results["gateway_rss_end"] = rss(gateway.pid)
        results["chp_rss_end"] = rss(chp.pid)
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
        stop(gateway)
        if gateway is not None and args.keep_logs:
            print(f"logs in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = time.monotonic() - t_begin
    results["host"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "chp": json.loads((CHP_JS.parent.parent / "package.json").read_text())["version"],
    }
    print_report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def print_report(results: dict, args: argparse.Namespace) -> None:
    h = results["host"]
    print(
        f"\n`.venv/bin/python benchmarks/gateway.py --duration {args.duration:g} --rounds {args.rounds}` — loopback, {h['cpus']} CPUs "
        f"shared by load generator, proxy and backend; Python {h['python']}, aiohttp {h['aiohttp']}, "
        f"node {h['node']}, CHP {h['chp']}; {results['seconds']:.0f} s.\n"
    )
    print("| test | conc. | direct | gateway | CHP | gateway / CHP | gateway / direct | CHP / direct |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["cells"]:
        d, g, c = (row[t] for t in TARGETS)
        unit = "req/s" if row["test"].startswith("HTTP") else "rt/s"
        err = "".join(f" ({t}: {row[t].get('errors') or row[t].get('error')} errors)" for t in TARGETS if row[t].get("errors") or row[t].get("error"))
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
    m = results["memory"]
    print(f"\n{IDLE_SOCKETS:,} idle websockets (RSS of the proxy process, MiB):\n")
    print("| proxy | before | 1,000 open | closed | 1,000 open again | closed | KiB per websocket | 2nd round above 1st peak, KiB/ws |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in ("direct", "gateway", "chp"):
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
    print(f"RSS at the end: gateway {results['gateway_rss_end'] / MiB:.1f} MiB, CHP {results['chp_rss_end'] / MiB:.1f} MiB.")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "backend":
        return backend_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        asyncio.run(client_loop())
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=0.8, help="seconds measured per round of a cell (default 0.8)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per cell; the median round is reported (default 3)")
    p.add_argument("--warmup", type=float, default=0.2, help="seconds run before measuring each cell")
    p.add_argument("--json", help="also write all figures to this file")
    p.add_argument("--only", action="append", help="run only tests whose 'NAME c=N' contains this (repeatable; skips the memory test)")
    p.add_argument("--gateway-script", help="run this script with the gateway's options instead of -m prefect_hpcviz.viz.gateway (for experiments)")
    p.add_argument("--keep-logs", action="store_true", help="keep the gateway's and CHP's logs")
    return orchestrate(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
