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
