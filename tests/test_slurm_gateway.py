"""The gateway launching real viz servers as Slurm jobs: what the waiting page says at each
phase, and what a person sees when the job fails at start, is cancelled from outside, can never
run, or reaches its time limit."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from prefect_hpcviz.viz.gateway import EmbeddedGateway

pytestmark = pytest.mark.slurm


class Viewer:
    """A browser tab: opens the link, keeps the cookie, reads pages and the status API."""

    def __init__(self, gateway: EmbeddedGateway, link: str) -> None:
        self.http = httpx.Client(base_url=gateway.local_url, trust_env=False, timeout=60)
        response = self.http.get(link[len(gateway.url):], headers={"Accept": "text/html"})
        assert response.status_code == 303, response.text
        self.cookie = response.headers["set-cookie"].split(";")[0]
        self.base = response.headers["location"]

    def page(self) -> httpx.Response:
        return self.http.get(
            self.base, headers={"Cookie": self.cookie, "Accept": "text/html"}, follow_redirects=True
        )

    def get(self, path: str) -> httpx.Response:
        return self.http.get(self.base + path, headers={"Cookie": self.cookie, "Accept": "application/json"})

    def status(self) -> dict:
        return self.get("__hpcviz__/status").json()

    def wait_for(self, predicate, timeout: float = 90.0, what: str = "") -> dict:
        """Long-poll the status (as the waiting page does) until ``predicate(status)``."""
        deadline = time.monotonic() + timeout
        status = self.status()
        while not predicate(status):
            left = deadline - time.monotonic()
            assert left > 0, f"{what or 'condition'} not met within {timeout} s; last status {status}"
            query = {"since": status["state"], "phase": status["phase"], "wait": min(5, left)}
            status = self.http.get(
                self.base + "__hpcviz__/status", params=query, headers={"Cookie": self.cookie}
            ).json()
        return status


def squeue() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("|") for line in out.splitlines())


def slurm_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return out.split("JobState=", 1)[1].split()[0]


def launcher(slurm_cluster, workdir: Path, **options) -> dict:
    return {
        "kind": "slurm",
        "options": {
            "partition": slurm_cluster["partition"],
            "workdir": str(workdir),
            "memory": "1G",
            "walltime": "10",
            "serve_host": "127.0.0.1",  # the gateway runs on the compute node here
            **options,
        },
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    state = tmp_path_factory.mktemp("gateway")
    with EmbeddedGateway(state_dir=state, launch_timeout_s=120, poll_interval_s=0.5) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway):
    with gateway.client() as c:
        yield c


def _job_pid(workdir: Path, job_id: str) -> int:
    started = workdir / f"hpcviz-{job_id}.started"
    deadline = time.monotonic() + 30
    while not (started.exists() and started.read_text().strip()):
        assert time.monotonic() < deadline, "the job script did not write its .started file"
        time.sleep(0.05)
    return json.loads(started.read_text())["pid"]


def test_queued_with_slurms_reason_then_starting_on_the_node_then_ready_then_stopped(
    gateway, client, slurm_cluster, small_reduced, tmp_path
):
    # Another job holds every CPU: ours must wait for Resources.
    blocker = subprocess.run(
        ["sbatch", "--parsable", f"--cpus-per-task={slurm_cluster['cpus']}", "--output=/dev/null", "--wrap", "sleep 300"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while squeue().get(blocker) != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        workdir = tmp_path / "jobs"
        reg = client.register(str(small_reduced.path), title="slurm run", launcher=launcher(slurm_cluster, workdir))
        viewer = Viewer(gateway, reg.link)
        waiting = viewer.page()
        assert waiting.status_code == 200 and "id=phase" in waiting.text
        queued = viewer.wait_for(lambda s: s["phase"] == "queued (Resources)", 30, "queued (Resources)")
        assert queued["state"] == "queued"
        assert "queued (Resources)" in viewer.page().text, "the waiting page itself says why it waits"
        job_id = client.get(reg.id)["session"]["job_id"]
        assert squeue()[job_id] == "PENDING"
    finally:
        subprocess.run(["scancel", blocker], check=True)
    starting = viewer.wait_for(lambda s: s["state"] != "queued", 60, "the job to start")
    assert starting["state"] in ("starting", "ready")
    if starting["state"] == "starting":
        assert starting["phase"] == f"starting on {slurm_cluster['node']}"
    ready = viewer.wait_for(lambda s: s["state"] == "ready", 120, "ready")
    assert ready["phase"] == "ready" and 0 < ready["ends_in_s"] <= 600 and ready["ends_at"].endswith("Z")
    app = viewer.page()
    assert app.status_code == 200 and "<html" in app.text.lower() and "id=phase" not in app.text
    logs = viewer.get("__hpcviz__/logs")
    assert logs.status_code == 200 and "hpcviz-serve: ready on http://127.0.0.1:" in logs.text
    stranger = httpx.get(f"{gateway.local_url}/s/{reg.id}/__hpcviz__/logs", trust_env=False)
    assert stranger.status_code == 403, "only the link's holder reads the logs"
    admin = httpx.get(f"{gateway.local_url}/api/sessions/{ready['session_id']}/logs", trust_env=False,
                      headers={"Authorization": f"Bearer {gateway.admin_token}"})
    assert admin.status_code == 200 and "hpcviz-serve: ready" in admin.text

    pid = _job_pid(workdir, job_id)
    assert psutil.Process(pid).is_running()
    stopped = httpx.post(f"{gateway.local_url}/api/sessions/{ready['session_id']}/stop", trust_env=False,
                         headers={"Authorization": f"Bearer {gateway.admin_token}"}, timeout=60)
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert job_id not in squeue(), "stop: the job is gone from the queue"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_job_that_fails_at_start_turns_into_an_error_page_with_the_reason_and_log_tail(
    gateway, client, slurm_cluster, tmp_path
):
    reg = client.register(str(tmp_path / "no-such-data"), launcher=launcher(slurm_cluster, tmp_path / "jobs"))
    viewer = Viewer(gateway, reg.link)
    viewer.page()
    started = time.monotonic()
    failed = viewer.wait_for(lambda s: s["state"] == "failed", 90, "the failure")
    assert "exit code 2" in failed["reason"] and "no-such-data" in failed["log_tail"]
    page = viewer.page()
    assert page.status_code == 503 and "could not start" in page.text and "exit code 2" in page.text
    assert "Start again" in page.text and "no-such-data" in page.text
    assert time.monotonic() - started < 60


def test_a_job_cancelled_from_outside_with_scancel_ends_the_session_and_says_so(
    gateway, client, slurm_cluster, small_reduced, tmp_path
):
    reg = client.register(str(small_reduced.path), launcher=launcher(slurm_cluster, tmp_path / "jobs"))
    viewer = Viewer(gateway, reg.link)
    viewer.page()
    ready = viewer.wait_for(lambda s: s["state"] == "ready", 120, "ready")
    job_id = client.get(reg.id)["session"]["job_id"]
    subprocess.run(["scancel", job_id], check=True)
    ended = viewer.wait_for(lambda s: s["state"] not in ("ready",), 30, "the gateway to notice")
    assert ended["state"] == "failed" and "cancelled (scancel)" in ended["reason"], ended
    page = viewer.page()
    assert page.status_code == 503 and "cancelled (scancel)" in page.text and "Start again" in page.text
    assert ready["session_id"] == ended["session_id"]


def test_a_request_slurm_can_never_run_is_an_error_page_within_seconds_and_leaves_no_job(
    gateway, client, slurm_cluster, tmp_path
):
    reg = client.register(
        "/data/any", launcher=launcher(slurm_cluster, tmp_path / "jobs", cpus=slurm_cluster["cpus"] + 1)
    )
    viewer = Viewer(gateway, reg.link)
    started = time.monotonic()
    viewer.page()
    failed = viewer.wait_for(lambda s: s["state"] == "failed", 30, "the failure")
    assert time.monotonic() - started < 15
    assert "PartitionConfig" in failed["reason"] and "Change the launcher's settings" in failed["reason"]
    job_id = client.get(reg.id)["session"]["job_id"]
    assert job_id not in squeue()
    page = viewer.page()
    assert page.status_code == 503 and "PartitionConfig" in page.text


def test_near_its_time_limit_the_session_warns_then_ends_cleanly_before_slurm_kills_it(
    gateway, client, slurm_cluster, small_reduced, tmp_path
):
    reg = client.register(str(small_reduced.path), launcher=launcher(slurm_cluster, tmp_path / "jobs", walltime="1"))
    viewer = Viewer(gateway, reg.link)
    viewer.page()
    ready = viewer.wait_for(lambda s: s["state"] == "ready", 120, "ready")
    assert ready["ends_in_s"] <= 60 and "ends in" in ready["warning"] and "time limit" in ready["warning"]
    job_id = client.get(reg.id)["session"]["job_id"]
    stopped = viewer.wait_for(lambda s: s["state"] == "stopped", 70, "the stop at the time limit")
    assert "time limit" in stopped["reason"]
    deadline = time.monotonic() + 30
    while (state := slurm_state(job_id)) in ("RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"job {job_id} still {state}"
        time.sleep(0.1)
    assert state == "CANCELLED", "stopped by the gateway, not killed by Slurm (TIMEOUT)"
    page = viewer.page()
    assert page.status_code == 503 and "time limit" in page.text and "Start again" in page.text
