"""End to end on Slurm: the flow reduces on Dask workers that are Slurm jobs and publishes a
link artifact; Chromium clicks the link; the gateway submits an sbatch job; the 3D view
renders; stopping the session leaves no job in the queue and no process behind."""

from __future__ import annotations

import html
import json
import subprocess
import time

import httpx
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from prefect_hpcviz.blocks import SlurmDaskCluster, SlurmLauncher, VizGateway
from prefect_hpcviz.flows import visualize_simulation
from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayConfig
from tests.helpers import is_rendered

pytestmark = [pytest.mark.slurm, pytest.mark.browser]

VIEW_IMAGE_READY = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"


def _squeue() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%j"], capture_output=True, text=True, check=True).stdout
    return {line.split("|")[0]: line for line in out.splitlines()}


def _link_artifacts(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [a.data for a in artifacts if a.type == "markdown" and a.key and a.key.endswith("-link")]


def test_flow_to_artifact_link_to_a_rendered_view_served_by_a_slurm_job(
    chromium_browser, prefect_harness, slurm_cluster, small_simulation, tmp_path
):
    config = GatewayConfig(host="127.0.0.1", port=0, state_dir=tmp_path / "gateway", launch_timeout_s=180)
    with EmbeddedGateway(config) as gateway:
        state = visualize_simulation(
            str(small_simulation),
            title="Slurm run",
            out_dir=str(tmp_path / "reduced"),
            cluster=SlurmDaskCluster(
                partition=slurm_cluster["partition"], cores=1, memory="1GB", processes=1,
                walltime="00:10:00", jobs=1, log_directory=str(tmp_path / "dask-logs"),
            ),
            launcher=SlurmLauncher(
                partition=slurm_cluster["partition"], walltime="00:20:00", memory="2G",
                serve_host="127.0.0.1", workdir=str(tmp_path / "jobs"),
            ),
            gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
            return_state=True,
        )
        assert state.is_completed(), state.message
        publication = state.result(_sync=True)  # playwright runs an event loop in this thread
        assert not [line for line in _squeue().values() if "dask-worker" in line], "the Dask worker jobs ended"

        (artifact,) = _link_artifacts(state.state_details.flow_run_id)
        assert f"]({publication.link})" in artifact
        page = chromium_browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_content(f'<a id=open href="{html.escape(publication.link)}">Open 3D view</a>')
        page.click("#open")
        page.wait_for_function(VIEW_IMAGE_READY, timeout=180_000)
        assert page.url.startswith(f"{gateway.url}/s/{publication.viz_id}/")

        session = gateway.client().get(publication.viz_id)["session"]
        job_id = session["job_id"]
        assert session["job_kind"] == "slurm" and "RUNNING" in _squeue()[job_id]
        deadline = time.monotonic() + 30
        while not is_rendered(png := page.locator("#hpcviz-view").screenshot()):
            assert time.monotonic() < deadline, "the view never showed a rendered image"
        (tmp_path / "slurm-view.png").write_bytes(png)
        pid = json.loads((tmp_path / "jobs" / f"hpcviz-{job_id}.started").read_text())["pid"]
        assert "prefect_hpcviz.viz.serve" in " ".join(psutil.Process(pid).cmdline())

        stopped = httpx.post(
            f"{gateway.local_url}/api/sessions/{session['id']}/stop", timeout=60, trust_env=False,
            headers={"Authorization": f"Bearer {gateway.admin_token}"},
        )
        assert stopped.json()["state"] == "stopped"
        assert job_id not in _squeue(), "the job is gone from squeue"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        page.close()
