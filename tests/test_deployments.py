"""Schedules: `hpcviz deploy` against a real `prefect server start`, a real
`prefect worker` for a process pool, and runs triggered through the API; the
test reads back the artifacts those runs produced."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_hpcviz.blocks import VizGateway
from prefect_hpcviz.cli.prefect_server import LocalPrefectServer
from prefect_hpcviz.cli.services import flush_prefect_logs_and_events
from prefect_hpcviz.viz.datasets import write_synthetic
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayConfig
from tests.helpers import free_port

POOL = "hpcviz-test-process"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    with LocalPrefectServer(tmp_path_factory.mktemp("prefect-home"), port=free_port(), timeout_s=180) as server:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
            flush_prefect_logs_and_events()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    # The gateway's own culler waits an hour: only the culling flow stops sessions here.
    config = GatewayConfig(host="127.0.0.1", port=0, state_dir=tmp_path_factory.mktemp("gateway"),
                           idle_timeout_s=1.0, poll_interval_s=3600.0)
    with EmbeddedGateway(config) as running:
        yield running


@pytest.fixture(scope="module")
def deployed(prefect_server, gateway, tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    write_synthetic(site / "run", shape=(24, 24, 24), steps=2)
    catalog = site / "catalog.yaml"
    catalog.write_text(
        "visualizations:\n"
        "  - name: Deployed view\n"
        "    source: run/simulation.pvd\n"
        "    recipe: {steps: [{coarsen: {factor: 2}}, {contour: {field: pressure, values: [0.5]}}]}\n"
        "    view: {camera: -y, colormap: plasma}\n"
        "    thumbnails: [[160, 100]]\n"
    )
    VizGateway(url=gateway.url, admin_token=gateway.admin_token).save("test-gateway", overwrite=True)
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url, "HPCVIZ_HOME": str(site / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "prefect_hpcviz.cli", "deploy", "--catalog", str(catalog),
         "--gateway-block", "test-gateway", "--pool", POOL],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "regenerate-canned/nightly" in done.stdout
    worker_log = (site / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
        env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_HOME": str(site / "worker-prefect")},
        stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield site
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        worker_log.close()


async def _deployment(name: str):
    async with get_client() as client:
        return await client.read_deployment_by_name(name)


async def _pause_schedules(deployment) -> None:
    async with get_client() as client:
        for schedule in deployment.schedules:
            await client.update_deployment_schedule(deployment.id, schedule.id, active=False)


async def _run_and_wait(name: str, site: Path, timeout: float = 300):
    """Trigger a run of a deployment through the API; poll its state until it ends."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(name)
        flow_run = await client.create_flow_run_from_deployment(deployment.id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            flow_run = await client.read_flow_run(flow_run.id)
            if flow_run.state and flow_run.state.type.value in FINAL:
                return flow_run
            await asyncio.sleep(0.5)  # poll interval of a condition with a deadline
    log = (site / "worker.log").read_text(errors="replace")[-3000:]
    raise AssertionError(f"{name}: the run did not end within {timeout:.0f} s (state {flow_run.state}); worker log:\n{log}")


async def _artifacts(flow_run_id) -> dict:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


async def test_deploy_creates_a_nightly_and_a_frequent_schedule_on_a_process_pool(deployed):
    nightly = await _deployment("regenerate-canned/nightly")
    cull = await _deployment("cull-idle-sessions/every-5-minutes")

    assert nightly.work_pool_name == POOL and cull.work_pool_name == POOL
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert [s.schedule.interval.total_seconds() for s in cull.schedules] == [300]
    assert nightly.parameters["catalog"] == str(deployed / "catalog.yaml")
    assert nightly.parameters["gateway"] == "test-gateway"
    async with get_client() as client:
        assert (await client.read_work_pool(POOL)).type == "process"
    # From here on only the runs this test triggers may run.
    await _pause_schedules(nightly)
    await _pause_schedules(cull)


async def test_a_worker_runs_the_regeneration_and_it_publishes_the_gallery(deployed, gateway):
    flow_run = await _run_and_wait("regenerate-canned/nightly", deployed)
    assert flow_run.state.type.value == "COMPLETED", flow_run.state.message

    by_key = await _artifacts(flow_run.id)
    assert {"hpcviz-canned-deployed-view", "hpcviz-canned-gallery", "hpcviz-canned-report"} <= set(by_key)
    gallery = by_key["hpcviz-canned-gallery"].data
    link = gallery.split('<a href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert link.startswith(f"{gateway.url}/v/")
    assert httpx.get(link, follow_redirects=False, trust_env=False).status_code == 303


async def test_a_worker_runs_the_culling_flow_and_it_reports_the_idle_session_it_stopped(deployed, gateway, small_reduced):
    with gateway.client() as client:
        registration = client.register(str(small_reduced.path), title="idle one", warm=True)
        session = client.wait_ready(registration.id, timeout=120, launch=False)

    flow_run = await _run_and_wait("cull-idle-sessions/every-5-minutes", deployed)
    assert flow_run.state.type.value == "COMPLETED", flow_run.state.message

    rows = (await _artifacts(flow_run.id))["hpcviz-culled-sessions"].data
    rows = rows if isinstance(rows, list) else __import__("json").loads(rows)
    stopped = {row["session"]: row for row in rows}
    assert session["id"] in stopped
    assert "without activity" in stopped[session["id"]]["reason"]
    with gateway.client() as client:
        assert client.get(registration.id)["session"]["state"] == "stopped"


def test_deploy_refuses_a_bad_catalog_before_touching_the_server(tmp_path):
    from prefect_hpcviz.deployments import deploy

    bad = tmp_path / "catalog.yaml"
    bad.write_text("visualizations:\n  - {name: a, source: x.pvd, view: {camera: sideways}}\n")
    with pytest.raises(InputError, match=r"entry 1 \('a'\) key 'view.camera'"):
        deploy(bad, "test-gateway", api_url="http://127.0.0.1:9/api")
