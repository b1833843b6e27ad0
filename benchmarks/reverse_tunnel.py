"""The reverse connection against a direct connection, through the same gateway, in one run.

    .venv/bin/python benchmarks/reverse_tunnel.py [--rounds 5] [--duration 1.0] [--clicks 5] [--json out.json]

One gateway (``python -m prefect_hpcviz.viz.gateway``, its own process,
loopback) and, for each measurement, two visualizations that differ only in
``reverse``: ``direct`` (the server reports host:port; the proxy connects to
it) and ``reverse`` (the server dials the gateway; every proxied connection is
a stream websocket the server opened, see viz/gateway/reverse_tunnel.py).

Measured (median over ``--rounds``; each measure runs on both cases back to back, so
other load on the machine hits both alike, and the ratio is the median of the
rounds' ratios):

- with the echo stand-in (tests/apps/echo_server.py): HTTP GET of a small page
  (~0.6 KB JSON echo), requests/s with 1 and 10 keep-alive clients; GET of an 8 MiB body, MB/s;
  websocket connect (a new upstream connection: for ``reverse`` a new stream),
  a 64-byte round trip and a 4 MiB round trip, milliseconds;
- with the real explorer in headless Chromium: click to first image, a fresh
  browser context each time, the viz server taken from the local launcher's
  waiting standby in both cases (as a click normally finds one).

The load generator runs in this process; gateway, servers and Chromium share
the machine's cores, so compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "apps" / "echo_server.py"
CHROMIUM = Path("/usr/lib/chromium/chromium")
IMAGE_SHOWN = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"
CASES = ("direct", "reverse")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def echo_launcher(reverse: bool) -> dict:
    command = ["{python}", str(ECHO), "--report-url", "{report_url}", "--data", "{data}", "--idle-timeout", "0"]
    return {"kind": "local", "options": {"command": command + (["--reverse"] if reverse else []), "reverse": reverse}}


class Gateway:
    """The gateway as its own process, with the admin API and one cookie per visualization."""

    def __init__(self, state: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = state
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect_hpcviz.viz.gateway", "--port", str(self.port), "--state-dir", str(state)],
            stdout=subprocess.DEVNULL, stderr=(state.parent / "gateway.log").open("w"), start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the gateway did not start; see {state.parent / 'gateway.log'}")
            time.sleep(0.05)
        self.headers = {"Authorization": f"Bearer {(state / 'admin_token').read_text().strip()}"}
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=120, trust_env=False)

    def register(self, data: str, launcher: dict) -> dict:
        response = self.http.post("/api/visualizations", json={"data": data, "launcher": launcher})
        response.raise_for_status()
        return response.json()

    def wait_ready(self, viz_id: str, timeout: float = 120) -> dict:
        self.http.post(f"/api/visualizations/{viz_id}/launch").raise_for_status()
        deadline = time.monotonic() + timeout
        while (session := self.http.get(f"/api/visualizations/{viz_id}").json()["session"])["state"] != "ready":
            if session["state"] in ("failed", "stopped") or time.monotonic() > deadline:
                raise SystemExit(f"{viz_id} did not become ready: {session}")
            time.sleep(0.05)
        return session

    def cookie(self, link: str) -> tuple[str, str]:
        opened = httpx.get(link, follow_redirects=False, trust_env=False)
        return opened.headers["set-cookie"].split(";")[0], f"{self.url}{opened.headers['location']}"

    def stop_sessions(self) -> None:
        for viz in self.http.get("/api/visualizations").json()["visualizations"]:
            if viz["session"] and viz["session"]["state"] in ("queued", "starting", "ready"):
                self.http.post(f"/api/sessions/{viz['session']['id']}/stop").raise_for_status()

    def wait_for_standby(self, timeout: float = 120) -> None:
        """Until one of this gateway's standby servers waits for a session (prepared, idle, no socket)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                try:
                    if "--standby" in child.cmdline() and not child.net_connections("tcp"):
                        if child.cpu_percent(interval=0.1) < 5:
                            return
                except psutil.Error:
                    pass
            time.sleep(0.1)
        raise SystemExit("no standby server is waiting")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --------------------------------------------------------------- HTTP and ws
async def requests_per_s(url: str, cookie: str, clients: int, duration: float) -> float:
    async def one(http: aiohttp.ClientSession, stop_at: float) -> int:
        done = 0
        while time.perf_counter() < stop_at:
            async with http.get(url) as response:
                await response.read()
                assert response.status == 200, response.status
            done += 1
        return done

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(headers={"Cookie": cookie}, connector=connector) as http:
        await one(http, time.perf_counter() + 0.2)  # warm the connections up
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(http, started + duration) for _ in range(clients)))
        return sum(counts) / (time.perf_counter() - started)


async def download_mb_per_s(url: str, cookie: str, times: int = 4) -> float:
    async with aiohttp.ClientSession(headers={"Cookie": cookie}) as http:
        started, size = time.perf_counter(), 0
        for _ in range(times):
            async with http.get(url) as response:
                size += len(await response.read())
        return size / 1e6 / (time.perf_counter() - started)


async def websocket_ms(url: str, cookie: str, origin: str, repeat: int = 20) -> dict[str, float]:
    """Median connect, 64 B round trip and 4 MiB round trip, in milliseconds."""
    connects, small, big = [], [], []
    payload = os.urandom(4 * 1024 * 1024)
    async with aiohttp.ClientSession(headers={"Cookie": cookie}) as http:
        for i in range(repeat):
            started = time.perf_counter()
            async with http.ws_connect(url, origin=origin, max_msg_size=64 * 1024 * 1024) as ws:
                connects.append(time.perf_counter() - started)
                for _ in range(10):
                    started = time.perf_counter()
                    await ws.send_bytes(b"x" * 64)
                    await ws.receive()
                    small.append(time.perf_counter() - started)
                if i < 5:
                    started = time.perf_counter()
                    await ws.send_bytes(payload)
                    echoed = await ws.receive()
                    big.append(time.perf_counter() - started)
                    assert len(echoed.data) == len(payload)
    return {k: 1000 * statistics.median(v) for k, v in (("connect", connects), ("rt64", small), ("rt4m", big))}


def measure_echo(gateway: Gateway, rounds: int, duration: float) -> dict[str, dict[str, list[float]]]:
    """Every figure of every round, per case."""
    targets = {}
    for case in CASES:
        viz = gateway.register(f"/bench/{case}", echo_launcher(case == "reverse"))
        gateway.wait_ready(viz["id"])
        cookie, base = gateway.cookie(viz["link"])
        targets[case] = (cookie, base)
    measures = {
        "req_s_1": lambda cookie, base: requests_per_s(f"{base}small", cookie, 1, duration),
        "req_s_10": lambda cookie, base: requests_per_s(f"{base}small", cookie, 10, duration),
        "mb_s_8m": lambda cookie, base: download_mb_per_s(f"{base}big?n={8 * 1024 * 1024}", cookie),
        "ws": lambda cookie, base: websocket_ms(f"{base}ws", cookie, gateway.url),
    }
    samples: dict[str, dict[str, list[float]]] = {case: {} for case in CASES}
    for round_ in range(rounds):  # each measure on both cases back to back: other load hits both alike
        for name, measure in measures.items():
            for case in CASES if round_ % 2 else CASES[::-1]:
                value = asyncio.run(measure(*targets[case]))
                for key, figure in (value.items() if isinstance(value, dict) else [(name, value)]):
                    samples[case].setdefault(key, []).append(figure)
    return samples


# ------------------------------------------------------------ click to image
def reduced_dataset(folder: Path) -> Path:
    from distributed import Client, LocalCluster

    from prefect_hpcviz.viz.datasets import write_synthetic
    from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset

    recipe = Recipe.from_yaml("steps:\n  - contour: {field: pressure, values: [0.6]}\n  - slice: {normal: [0, 0, 1]}\n")
    sim = write_synthetic(folder / "sim", shape=(64, 64, 64), steps=3)
    with LocalCluster(processes=False, n_workers=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        return reduce_dataset(sim, recipe, folder / "reduced", client=client).path


def measure_clicks(gateway: Gateway, data: Path, clicks: int) -> dict[str, list[float]]:
    """Seconds from navigating to the link to the first image, ``clicks`` per case."""
    from playwright.sync_api import sync_playwright

    links = {case: gateway.register(str(data), {"kind": "local", "options": {"reverse": case == "reverse"}})["link"]
             for case in CASES}  # fmt: skip
    seconds: dict[str, list[float]] = {case: [] for case in CASES}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            for round_ in range(clicks + 1):  # round 0 warms up (not counted); the order alternates
                for case in CASES if round_ % 2 else CASES[::-1]:
                    gateway.stop_sessions()
                    gateway.wait_for_standby()
                    context = browser.new_context(viewport={"width": 1280, "height": 800})
                    page = context.new_page()
                    started = time.perf_counter()
                    page.goto(links[case], wait_until="commit")
                    page.wait_for_function(IMAGE_SHOWN, timeout=120_000, polling=20)
                    if round_:
                        seconds[case].append(time.perf_counter() - started)
                    context.close()
        finally:
            browser.close()
    return seconds


# ------------------------------------------------------------------- report
def table(echo: dict[str, dict[str, list[float]]], clicks: dict[str, list[float]] | None) -> str:
    rows = [
        ("HTTP GET small page, 1 client (req/s)", "req_s_1"),
        ("HTTP GET small page, 10 clients (req/s)", "req_s_10"),
        ("HTTP GET 8 MiB (MB/s)", "mb_s_8m"),
        ("websocket connect (ms)", "connect"),
        ("websocket round trip, 64 B (ms)", "rt64"),
        ("websocket round trip, 4 MiB (ms)", "rt4m"),
    ]
    lines = [
        "| through the gateway | direct | reverse | reverse / direct (median of rounds) |",
        "|---|---:|---:|---:|",
    ]
    for label, key in rows:
        d, r = echo["direct"][key], echo["reverse"][key]
        ratio = statistics.median(b / a for a, b in zip(d, r))
        digits = 2 if "(ms)" in label else 0
        d_median, r_median = statistics.median(d), statistics.median(r)
        lines.append(f"| {label} | {d_median:,.{digits}f} | {r_median:,.{digits}f} | {ratio:.2f} |")
    if clicks:
        (d, d_range), (r, r_range) = (_median_and_range(clicks[case]) for case in CASES)
        ratio = statistics.median(b / a for a, b in zip(clicks["direct"], clicks["reverse"]))
        lines.append(
            f"| click to first image, explorer in Chromium (s; min-max) | {d:.2f} ({d_range}) | {r:.2f} ({r_range}) "
            f"| {ratio:.2f} |"
        )
    return "\n".join(lines)


def _median_and_range(values: list[float]) -> tuple[float, str]:
    return statistics.median(values), f"{min(values):.2f}-{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the echo measurements (median reported)")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per requests/s measurement")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per case (median reported); 0: skip")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hpcviz-bench-reverse-") as tmp:
        folder = Path(tmp)
        data = reduced_dataset(folder) if args.clicks and CHROMIUM.exists() else None
        gateway = Gateway(folder / "gateway")
        try:
            echo = measure_echo(gateway, args.rounds, args.duration)
            gateway.stop_sessions()
            clicks = measure_clicks(gateway, data, args.clicks) if data is not None else None
        finally:
            gateway.stop_sessions()
            gateway.close()
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"rounds={args.rounds} duration={args.duration}s clicks={args.clicks}\n")  # fmt: skip
    print(table(echo, clicks))
    if args.json:
        Path(args.json).write_text(json.dumps({"echo": echo, "clicks": clicks}, indent=2))


if __name__ == "__main__":
    main()
