"""Click to first rendered image through Slurm, phase by phase, against the local launcher.

One gateway (in this process) serves the same reduced dataset through three
launchers: Slurm (``sbatch`` on this machine's Slurm), local (a fresh process)
and local with a standby server (the default). For each click headless
Chromium opens a new link and the script notes when:

    submit     the click until the job id is known (sbatch returned)
    pending    until the job script runs on the node (Slurm's queue + launch)
    start      until the viz server reported ready (imports, data, first frame)
    app ready  until the app's page is in the browser (waiting page reloads)
    first img  until the view shows its first rendered image

Local jobs have no queue: their "pending" is empty and "start" runs from the
job id. Job ids come from polling the gateway's admin API every 10 ms, the
job script's start from its ``hpcviz-<id>.started`` file, ready from the
session's ``ready_at``.

    .venv/bin/python benchmarks/slurm_launch.py [--repeat 3] [--size 64]

Needs a running Slurm (``bash ../shared/ci/start-slurm.sh``). Prints a
markdown table (medians) for README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
IMAGE_SHOWN = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"
PHASES = ["submit", "pending", "start", "app ready", "first img"]


def reduced_dataset(folder: Path, size: int) -> Path:
    from distributed import Client, LocalCluster

    from prefect_hpcviz.viz.datasets import write_synthetic
    from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset

    sim = write_synthetic(folder / "sim", shape=(size, size, size), steps=3)
    recipe = Recipe.from_yaml("steps:\n  - contour: {field: pressure, values: [0.6]}\n  - slice: {normal: [0, 0, 1]}\n")
    with LocalCluster(processes=False, n_workers=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        return reduce_dataset(sim, recipe, folder / "reduced", client=client).path


class SessionWatcher(threading.Thread):
    """Polls the admin API for one visualization: when its session got a job id."""

    def __init__(self, api: httpx.Client, viz_id: str) -> None:
        super().__init__(daemon=True)
        self.api, self.viz_id = api, viz_id
        self.job_at: float | None = None
        self.session: dict | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            session = self.api.get(f"/api/visualizations/{self.viz_id}").json().get("session")
            if session and session.get("job_id") and self.job_at is None:
                self.job_at = time.time()
            if session:
                self.session = session
            if session and session.get("ready_at"):
                return
            time.sleep(0.01)


def click(browser, gateway, api: httpx.Client, data: Path, launcher: dict, jobs: Path) -> dict[str, float]:
    reg = gateway.client().register(str(data), title="benchmark", launcher=launcher)
    watcher = SessionWatcher(api, reg.id)
    watcher.start()
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    clicked = time.time()
    page.goto(reg.link)
    page.wait_for_selector("#hpcviz-view", timeout=300_000)
    app_at = time.time()
    page.wait_for_function(IMAGE_SHOWN, timeout=300_000)
    image_at = time.time()
    watcher.join(timeout=30)
    watcher.done.set()
    session = api.get(f"/api/visualizations/{reg.id}").json()["session"]
    started_file = jobs / f"hpcviz-{session['job_id']}.started"
    script_at = json.loads(started_file.read_text())["started_at"] if started_file.exists() else watcher.job_at
    ready_at = session["ready_at"]
    page.close()
    api.post(f"/api/sessions/{session['id']}/stop")
    return {
        "submit": watcher.job_at - clicked,
        "pending": script_at - watcher.job_at,
        "start": ready_at - script_at,
        "app ready": app_at - ready_at,
        "first img": image_at - app_at,
        "total": image_at - clicked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="synthetic volume edge (default 64)")
    args = parser.parse_args()
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        raise SystemExit("no Slurm answers (sinfo); start one: bash ../shared/ci/start-slurm.sh")

    from prefect_hpcviz.viz.gateway import EmbeddedGateway

    work = Path(tempfile.mkdtemp(prefix="hpcviz-slurm-bench-"))
    data = reduced_dataset(work, args.size)
    partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()[0].rstrip("*")
    launchers = {
        "Slurm (sbatch)": (
            {"kind": "slurm", "options": {"partition": partition, "workdir": str(work / "slurm-jobs"),
                                          "memory": "2G", "walltime": "30", "serve_host": "127.0.0.1"}},
            work / "slurm-jobs",
        ),
        "local, new process": ({"kind": "local", "options": {"standby": 0}}, work / "none"),
        "local, standby (default)": ({"kind": "local", "options": {"standby_delay_s": 0.5}}, work / "none"),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in launchers}
    with EmbeddedGateway(state_dir=work / "gateway", launch_timeout_s=300) as gateway, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/lib/chromium/chromium", args=CHROMIUM_ARGS)
        api = httpx.Client(base_url=gateway.local_url, headers={"Authorization": f"Bearer {gateway.admin_token}"},
                           trust_env=False, timeout=60)
        for name, (launcher, jobs) in launchers.items():  # warm-up click each: OS caches, standby
            click(browser, gateway, api, data, launcher, jobs)
            time.sleep(1.0)  # let the replacement standby start before the timed clicks
        for _ in range(args.repeat):
            for name, (launcher, jobs) in launchers.items():
                results[name].append(click(browser, gateway, api, data, launcher, jobs))
                time.sleep(1.0)  # a stopped job's CPU is free again before the next click
        browser.close()

    base = statistics.median(r["total"] for r in results["local, standby (default)"])
    print(f"\nClick to first rendered image, median of {args.repeat} (s); {args.size}^3 volume, "
          f"{os.cpu_count()} cores, Slurm {_slurm_version()}\n")
    print("| launcher | " + " | ".join(PHASES) + " | total | vs local standby |")
    print("|---" * (len(PHASES) + 3) + "|")
    for name, runs in results.items():
        cells = [f"{statistics.median(r[p] for r in runs):.2f}" for p in PHASES]
        total = statistics.median(r["total"] for r in runs)
        print(f"| {name} | " + " | ".join(cells) + f" | **{total:.2f}** | {total / base:.1f}x |")


def _slurm_version() -> str:
    return subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip().replace("slurm ", "")


if __name__ == "__main__":
    sys.exit(main())
