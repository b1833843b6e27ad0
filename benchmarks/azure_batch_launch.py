"""Launch to ready through the Azure Batch backend (on the test double) against the local launcher.

One gateway (in this process) starts a viz server for the same reduced
dataset, warm (no browser), through:

    local, new process          LocalBackend without a standby (the baseline)
    batch double                AzureBatchBackend -> azure-batch SDK -> the loopback Batch
                                test double -> LocalDispatcher -> the same process
    batch double, Blob staging  the same, with the data given as az://... and staged from Azurite

and notes, from the session's own timestamps and polling the admin API every 10 ms:

    submit   registration until the job id is known (Batch: get pool, create job, add task)
    ready    job id until the viz server reported ready (Batch: the state polls, the
             staging, then the same server start as local)

It measures what our code adds on the Batch path; a real Batch account adds
its own scheduling and node latency (seconds), which no double can measure.

    .venv/bin/python benchmarks/azure_batch_launch.py [--repeat 3] [--size 64]

Needs Azurite (``scripts/setup.sh`` installs it into .bench/). Prints a markdown
table (medians, and the ratio to the local baseline).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from azure_batch_double import BatchDouble  # noqa: E402  (the test double)

AZURITE = Path(__file__).resolve().parents[1] / ".bench" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # public dev key


def reduced_dataset(folder: Path, size: int) -> Path:
    from distributed import Client, LocalCluster

    from prefect_hpcviz.viz.datasets import write_synthetic
    from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset

    sim = write_synthetic(folder / "sim", shape=(size, size, size), steps=3)
    recipe = Recipe.from_yaml("steps:\n  - contour: {field: pressure, values: [0.6]}\n  - slice: {normal: [0, 0, 1]}\n")
    with LocalCluster(processes=False, n_workers=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        return Path(reduce_dataset(sim, recipe, folder / "reduced", client=client).path)


def start_azurite(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(AZURITE), "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--blobHost", "127.0.0.1",
         "--blobPort", str(port), "--location", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"http://127.0.0.1:{port}/devstoreaccount1"
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("azurite-blob did not start; run scripts/setup.sh")
            time.sleep(0.05)


def launch(gateway, admin, data: str, launcher: dict) -> dict[str, float]:
    """Register warm, poll until ready, stop; the two phases in seconds."""
    import httpx

    registered = time.time()
    reg = admin.register(data, title="benchmark", launcher=launcher, warm=True)
    job_at = None
    while True:
        session = admin.get(reg.id)["session"] or {}
        if job_at is None and session.get("job_id"):
            job_at = time.time()
        if session.get("state") == "failed":
            raise SystemExit(f"launch failed: {session.get('reason')}\n{session.get('log_tail')}")
        if session.get("ready_at"):
            break
        time.sleep(0.01)
    httpx.post(f"{gateway.local_url}/api/sessions/{session['id']}/stop", trust_env=False, timeout=60,
               headers={"Authorization": f"Bearer {gateway.admin_token}"}).raise_for_status()  # fmt: skip
    return {"submit": job_at - registered, "ready": session["ready_at"] - job_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    from azure.core.credentials import AzureNamedKeyCredential
    from azure.storage.blob import ContainerClient

    from prefect_hpcviz.viz.gateway import EmbeddedGateway

    work = Path(tempfile.mkdtemp(prefix="hpcviz-batch-bench-"))
    reduced = reduced_dataset(work, args.size)
    azurite, blob = start_azurite(work / "azurite")
    try:
        identity = AzureNamedKeyCredential("devstoreaccount1", AZURITE_KEY)
        container = ContainerClient.from_container_url(f"{blob}/data", credential=identity)
        container.create_container()
        for path in reduced.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    container.upload_blob(f"reduced/{reduced.name}/{path.relative_to(reduced)}", fh)
        with BatchDouble(work / "nodes", blob_credential=identity) as double:
            double.add_pool("viz", nodes=1, slots_per_node=4)
            os.environ["HPCVIZ_BENCH_BATCH_KEY"] = double.account_key
            batch = {"account_url": double.url, "account_name": double.account_name, "account_key_env": "HPCVIZ_BENCH_BATCH_KEY",
                     "pool_id": "viz", "python": sys.executable, "serve_host": "127.0.0.1"}  # fmt: skip
            cases = {
                "local, new process": (str(reduced), {"kind": "local", "options": {"standby": 0}}),
                "batch double": (str(reduced), {"kind": "azure_batch", "options": batch}),
                "batch double, Blob staging": (
                    f"az://data/reduced/{reduced.name}",
                    {"kind": "azure_batch", "options": {**batch, "job_id": "hpcviz-staged", "storage_account_url": blob,
                                                        "storage_identity": "/bench/identity"}},
                ),
            }  # fmt: skip
            results: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
            with EmbeddedGateway(state_dir=work / "gateway", launch_timeout_s=120, poll_interval_s=0.5) as gateway, \
                    gateway.client() as admin:
                for _ in range(args.repeat):
                    for name, (data, launcher) in cases.items():
                        results[name].append(launch(gateway, admin, data, launcher))
    finally:
        azurite.terminate()
        azurite.wait()

    baseline = statistics.median(r["submit"] + r["ready"] for r in results["local, new process"])
    print(f"\nLaunch to ready, {args.size}³ reduced dataset, median of {args.repeat} (s):\n")
    print("| launcher | submit | ready | total | vs local |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in results.items():
        submit = statistics.median(r["submit"] for r in runs)
        ready = statistics.median(r["ready"] for r in runs)
        total = statistics.median(r["submit"] + r["ready"] for r in runs)
        print(f"| {name} | {submit:.2f} | {ready:.2f} | {total:.2f} | {total / baseline:.2f}× |")


if __name__ == "__main__":
    main()
