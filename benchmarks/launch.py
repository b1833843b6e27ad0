"""How long a person waits: command to link, click to first rendered image.

Runs `hpcviz demo` twice in a fresh HPCVIZ_HOME (cold: data generated,
Prefect database created, reduction computed; warm: all of that reused) and
times until its 3D-view link answers. Then, with the demo still serving,
headless Chromium opens the link and times until the view shows a rendered
image: once with no viz server running (launch on click), once with the
server already up. The baseline, in the same run, is a plain trame launch
of the same app on the same reduced data, no gateway: process start to
first image.

    .venv/bin/python benchmarks/launch.py [--size 192] [--steps 6] [--repeat 3]

Prints a markdown table (median of --repeat clicks) for README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGE_SHOWN = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(home: Path, size: int, steps: int, gateway_port: int) -> tuple[subprocess.Popen, str, float]:
    """Start `hpcviz demo`; return it, its link, and seconds until the link answered."""
    env = {**os.environ, "HPCVIZ_HOME": str(home)}
    for name in ("PREFECT_API_URL", "HPCVIZ_GATEWAY_URL", "HPCVIZ_GATEWAY_TOKEN"):
        env.pop(name, None)
    log = (home / "demo.log").open("w")
    started = time.perf_counter()
    demo = subprocess.Popen(
        [sys.executable, "-m", "prefect_hpcviz.cli", "demo", "--size", str(size), "--steps", str(steps),
         "--prefect-port", str(free_port()), "--gateway-port", str(gateway_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    link = None
    while time.perf_counter() - started < 600:
        if demo.poll() is not None:
            raise SystemExit(f"hpcviz demo exited early; see {home / 'demo.log'}")
        if link is None:
            match = re.search(r"^(http\S+/v/\S+)$", (home / "demo.log").read_text(), re.MULTILINE)
            link = match.group(1) if match else None
        if link:
            try:
                if httpx.get(link, follow_redirects=False, timeout=2).status_code == 303:
                    return demo, link, time.perf_counter() - started
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    raise SystemExit("the demo's link never answered")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def click_to_image(browser, url: str, context=None) -> float:
    """Seconds from navigating to `url` until the view shows a rendered image.

    A fresh browser context (empty cache) unless one is given: a scientist who
    has opened a view before has the app's scripts in the browser cache.
    """
    own = context is None
    context = context or browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    started = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_function(IMAGE_SHOWN, timeout=120_000, polling=20)
    seconds = time.perf_counter() - started
    page.close()
    if own:
        context.close()
    return seconds


def stop_sessions(gateway_url: str, home: Path) -> None:
    """Stop the running viz servers through the gateway's REST API (cold click next)."""
    token = (home / "gateway" / "admin_token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    for viz in httpx.get(f"{gateway_url}/api/visualizations", headers=headers).json()["visualizations"]:
        if viz["session"] and viz["session"]["state"] not in ("stopped", "failed", "done"):
            httpx.post(f"{gateway_url}/api/sessions/{viz['session']['id']}/stop", headers=headers).raise_for_status()


def wait_for_standby(home: Path, timeout: float = 60) -> None:
    """Wait until the gateway's standby server has been replaced after a launch.

    A launch hands the standby to the session and starts a new one a few
    seconds later; the next click is measured once that one is waiting, as a
    click minutes later would find it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-f", "prefect_hpcviz.viz.serve --standby"], capture_output=True, text=True).stdout
        waiting = [pid for pid in out.split() if _is_waiting_standby(int(pid))]
        if waiting:
            return
        time.sleep(0.2)
    raise SystemExit("no standby server came back after a launch")


def _is_waiting_standby(pid: int) -> bool:
    """A standby still waiting for a session has no listening socket yet and is idle."""
    import psutil

    try:
        process = psutil.Process(pid)
        return not process.net_connections(kind="tcp") and process.cpu_percent(interval=0.1) < 5
    except psutil.Error:
        return False


def plain_trame_launch(browser, reduced: Path) -> float:
    """Baseline: the explorer started by hand on a free port, no gateway; process start to first image."""
    port = free_port()
    started = time.perf_counter()
    app = subprocess.Popen(
        [sys.executable, "-m", "prefect_hpcviz.viz.apps.explorer", "--data", str(reduced), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.02)
        page_started = time.perf_counter()
        seconds = click_to_image(browser, f"http://127.0.0.1:{port}/")
        return (page_started - started) + seconds
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192, help="grid points per axis of the demo data")
    parser.add_argument("--steps", type=int, default=6, help="time steps of the demo data")
    parser.add_argument("--repeat", type=int, default=3, help="clicks measured per case (median reported)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hpcviz-bench-"))
    gateway_port = free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    demo, _, cold_link = start_demo(home, args.size, args.steps, gateway_port)
    stop(demo)
    demo, link, warm_link = start_demo(home, args.size, args.steps, gateway_port)
    reduced = next(p.parent for p in (home / "reduced").glob("*/manifest.json"))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/lib/chromium/chromium", args=CHROMIUM_ARGS)
            returning = browser.new_context(viewport={"width": 1280, "height": 800})
            click_to_image(browser, link, returning)  # this browser has seen the app once
            baseline, cold, cold_cached, warm = [], [], [], []
            for _ in range(args.repeat):
                baseline.append(plain_trame_launch(browser, reduced))
                stop_sessions(gateway, home)
                wait_for_standby(home)
                cold.append(click_to_image(browser, link))
                stop_sessions(gateway, home)
                wait_for_standby(home)
                cold_cached.append(click_to_image(browser, link, returning))
                warm.append(click_to_image(browser, link))
            browser.close()
    finally:
        stop(demo)

    base = statistics.median(baseline)
    rows = [
        ("`hpcviz demo` to link answering, first run (data written, Prefect DB created, reduced)", cold_link, None),
        ("`hpcviz demo` to link answering, later runs (data and reduction reused)", warm_link, None),
        ("baseline: plain trame launch of the explorer + first image (no gateway)", base, 1.0),
        ("click to first image, no server running (launch on click), new browser profile", statistics.median(cold), statistics.median(cold) / base),
        ("click to first image, no server running, browser has opened a view before", statistics.median(cold_cached), statistics.median(cold_cached) / base),
        ("click to first image, server already running", statistics.median(warm), statistics.median(warm) / base),
    ]
    print(f"demo data {args.size}^3 x {args.steps} steps; clicks: median of {args.repeat}\n")
    print("| what | seconds | vs. baseline |\n| --- | ---: | ---: |")
    for what, seconds, ratio in rows:
        print(f"| {what} | {seconds:.2f} | {'' if ratio is None else f'{ratio:.2f}x'} |")


if __name__ == "__main__":
    main()
