"""Shared fixtures: real components only (see DESIGN.md, "Real components in tests").

A test that needs a component it cannot find calls ``require(...)``: under
CI=true that fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from prefect_hpcviz.cli.services import flush_prefect_logs_and_events

# Before anything imports vtk or prefect.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="hpcviz-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ["HPCVIZ_HOME"] = str(_SESSION_HOME / "hpcviz")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("HPCVIZ_GATEWAY_URL", None)
os.environ.pop("HPCVIZ_GATEWAY_TOKEN", None)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM = Path("/usr/lib/chromium/chromium")


def require(available: bool, what: str, how: str) -> None:
    """Fail (under CI) or skip (elsewhere) when a real component is missing."""
    if available:
        return
    message = f"{what} is not available: {how}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect API + SQLite database for the whole session (~12 s once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
        flush_prefect_logs_and_events()



def pytest_unconfigure(config):
    # Prefect drains its log and event queues at interpreter exit; once the
    # test servers are gone that drain would wait forever. Drain them now.
    if "prefect" in sys.modules:
        flush_prefect_logs_and_events()


@pytest.fixture(scope="session")
def dask_client():
    """A real dask.distributed LocalCluster with two worker processes."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            yield client


@pytest.fixture(scope="session")
def small_simulation(session_dir: Path) -> Path:
    """A small synthetic simulation (.pvd of .vti), written once per session."""
    from prefect_hpcviz.viz.datasets import write_synthetic

    return write_synthetic(session_dir / "small-sim", shape=(40, 40, 40), steps=3)


@pytest.fixture(scope="session")
def small_reduced(session_dir: Path):
    """The 32^3, 3-step synthetic simulation reduced with a contour and a slice layer."""
    from distributed import Client, LocalCluster

    from prefect_hpcviz.viz.datasets import write_synthetic
    from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset

    recipe = Recipe.from_yaml("steps:\n  - contour: {field: pressure, values: [0.6]}\n  - slice: {normal: [0, 0, 1]}\n")
    sim = write_synthetic(session_dir / "scene-sim", shape=(32, 32, 32), steps=3)
    with LocalCluster(processes=False, n_workers=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        return reduce_dataset(sim, recipe, session_dir / "scene-reduced", client=client)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """An embedded gateway on a free port with default settings, for one test module.

    Modules that need other settings define their own ``gateway`` fixture.
    """
    from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayConfig

    config = GatewayConfig(host="127.0.0.1", port=0, state_dir=tmp_path_factory.mktemp("gateway"))
    with EmbeddedGateway(config) as running:
        yield running


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real ``prefect server`` with its UI (not the test harness), for one test module."""
    from prefect_hpcviz.cli.prefect_server import LocalPrefectServer
    from tests.helpers import free_port

    with LocalPrefectServer(tmp_path_factory.mktemp("prefect-home"), port=free_port(), timeout_s=180) as server:
        yield server
        flush_prefect_logs_and_events()


@pytest.fixture(scope="module")
def chromium_browser():
    """Debian's Chromium driven by Playwright's sync API (no browser download).

    Module-scoped: the sync API runs an event loop in this thread while it is
    open, which pytest-asyncio tests in later modules must not inherit.
    """
    require(CHROMIUM.exists(), "Chromium", "apt-get install chromium (scripts/setup.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


# --- Azurite: the Azure Blob emulator (npm `azurite`, see scripts/setup.sh) ---

AZURITE_BLOB = Path(__file__).resolve().parents[1] / ".bench" / "node_modules" / ".bin" / "azurite-blob"


class AzuriteBlob:
    """A running Azurite blob service with the emulator's well-known account.

    Example:
        def test_upload(azurite):
            import fsspec
            fs = fsspec.filesystem("az", **azurite.storage_options)
            container = azurite.new_container()
            fs.pipe(f"{container}/a.txt", b"hello")
            assert fs.cat(f"az://{container}/a.txt") == b"hello"
    """

    account_name = "devstoreaccount1"
    # Azurite's fixed, public development key (documented by Microsoft; not a secret).
    account_key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    def __init__(self, port: int):
        self.port = port
        self.blob_endpoint = f"http://127.0.0.1:{port}/{self.account_name}"
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
        )
        self._containers = 0

    @property
    def storage_options(self) -> dict:
        """Keyword arguments for adlfs / fsspec ``az://`` URLs."""
        return {"connection_string": self.connection_string}

    def new_container(self, prefix: str = "test") -> str:
        """Create an empty container with a name unique in this session and return it."""
        from azure.storage.blob import BlobServiceClient

        self._containers += 1
        name = f"{prefix}-{os.getpid()}-{self._containers}"
        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)
        return name


def _close_adlfs_clients() -> None:
    """Run adlfs' client finalizers now, while fsspec's event loop still runs.

    Left to interpreter exit they find the loop stopped and print
    "RuntimeError: Loop is not running" after the test summary.
    """
    import gc
    import weakref

    try:
        import adlfs
    except ImportError:
        return
    for obj in gc.get_objects():
        if isinstance(obj, weakref.finalize) and obj.alive:
            target = obj.peek()
            if target and isinstance(target[0], adlfs.AzureBlobFileSystem):
                try:
                    obj()  # unregisters the finalizer even when it raises
                except RuntimeError:  # its loop (e.g. zarr's) is already gone: nothing left to close
                    pass


@pytest.fixture(scope="session")
def azurite(session_dir: Path):
    """Azurite's blob service on a free port for the whole session; stopped at the end."""
    import importlib.util
    import shutil
    import socket
    import subprocess
    import time

    from tests.helpers import free_port

    require(shutil.which("node") is not None, "Node.js", "apt-get install nodejs npm (scripts/setup.sh does)")
    require(AZURITE_BLOB.exists(), "Azurite", "npm install --prefix .bench azurite (scripts/setup.sh does)")
    require(importlib.util.find_spec("adlfs") is not None, "adlfs", "pip install -e '.[azure]' (scripts/setup.sh does)")

    workspace = Path(tempfile.mkdtemp(prefix="azurite-", dir=session_dir))
    port = free_port()
    log = open(workspace / "azurite.log", "wb")
    process = subprocess.Popen(
        [str(AZURITE_BLOB), "--skipApiVersionCheck", "--disableTelemetry", "--silent", "--blobHost", "127.0.0.1",
         "--blobPort", str(port), "--location", str(workspace)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"azurite-blob exited with {process.returncode}: {(workspace / 'azurite.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"azurite-blob did not listen on port {port} within 60 s")
                time.sleep(0.05)  # poll interval, not a readiness guess
        yield AzuriteBlob(port)
    finally:
        _close_adlfs_clients()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def slurm_cluster() -> dict:
    """The real one-node Slurm of ``../shared/ci/start-slurm.sh``: partition, node, CPUs, RealMemory (MB)."""
    import shutil
    import subprocess

    answer = ""
    if shutil.which("sinfo"):
        try:
            answer = subprocess.run(
                ["sinfo", "-h", "-o", "%P|%N|%T|%c|%m"], capture_output=True, text=True, timeout=20
            ).stdout.strip()
        except subprocess.TimeoutExpired:
            answer = ""
    require(bool(answer), "Slurm", "run `bash ../shared/ci/start-slurm.sh` as root (.ci/run does)")
    partition, node, _state, cpus, memory = answer.splitlines()[0].split("|")
    return {"partition": partition.rstrip("*"), "node": node, "cpus": int(cpus), "memory_mb": int(memory)}
