"""The reaper: the registry and the launchers' jobs agree again after anything went wrong.

- a job that died, in whichever active state its session was (queued,
  starting, ready), ends its session as failed with the reason and the tail
  of the job's log, also when it died while no gateway was running;
- a job that the backend still runs but no active session has (the registry
  forgot it, or its stop failed) is stopped, with a log line.

Real local processes through LocalBackend, real gateways (EmbeddedGateway)
on one state folder, restarted as a gateway process would be.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading

import pytest

from prefect_hpcviz.viz.backends import JobSpec, LocalBackend
from prefect_hpcviz.viz.gateway import EmbeddedGateway
from prefect_hpcviz.viz.gateway.registry import Registry
from tests.test_gateway import echo_launcher, process_alive, wait_until

NO_STANDBY = {"kind": "local", "options": {"standby": 0}}
SLOW_START = {
    "kind": "local",
    "options": {
        "grace_s": 0.5,
        "command": ["{python}", "-c", "import time; print('loading step 1 of 9', flush=True); time.sleep(60)"],
    },
}


def gateway_on(state_dir, **settings) -> EmbeddedGateway:
    settings = {
        "launch_timeout_s": 30,
        "poll_interval_s": 0.2,
        "reap_interval_s": 0.5,
        "default_launcher": NO_STANDBY,
        **settings,
    }
    return EmbeddedGateway(state_dir=state_dir, **settings)


def kill(job_id: str) -> None:
    os.killpg(int(job_id.split(".")[0]), signal.SIGKILL)
    wait_until(lambda: not process_alive(job_id), what="the job is gone")


def job_log(state_dir, job_id: str) -> str:
    """What a local job has written so far (its log in the gateway's jobs folder)."""
    return "".join(path.read_text() for path in (state_dir / "jobs").glob(f"*-{job_id}.log"))


def session_of(gw: EmbeddedGateway, viz_id: str, *states: str, timeout: float = 30) -> dict:
    return wait_until(
        lambda: (s := gw.client().get(viz_id)["session"]) and s["state"] in states and s,
        timeout,
        f"the session is {' or '.join(states)}",
    )


# ----------------------------------------------------------- jobs that died
@pytest.mark.parametrize("state", ["queued", "starting", "ready"])
def test_a_job_that_died_while_no_gateway_ran_ends_its_session_with_the_reason_and_log(tmp_path, state):
    launcher = echo_launcher() if state == "ready" else SLOW_START
    expected_log = "echo server on 127.0.0.1" if state == "ready" else "loading step 1 of 9"
    with gateway_on(tmp_path) as first:
        reg = first.client().register("/d", launcher=launcher, warm=True)
        session = session_of(first, reg.id, "ready" if state == "ready" else "starting")
        wait_until(lambda: expected_log in job_log(tmp_path, session["job_id"]), 20, "the job's first line")
        first.stop(stop_sessions=False)  # the gateway process goes ...
    if state == "queued":  # ... having recorded the job before it saw it run
        registry = Registry(tmp_path / "registry.sqlite")
        registry.update_session(session["id"], state="queued")
        registry.close()
    kill(session["job_id"])  # ... and the job dies meanwhile

    with gateway_on(tmp_path) as second:
        ended = session_of(second, reg.id, "failed", "stopped")
        assert ended["id"] == session["id"] and ended["state"] == "failed"
        assert "no gateway was watching it" in ended["reason"]
        before_ready = "exited before it was ready" in ended["reason"]
        assert before_ready is (state != "ready"), ended["reason"]
        assert expected_log in ended["log_tail"]


def test_a_ready_job_killed_under_a_running_gateway_is_marked_failed_with_its_signal(tmp_path):
    with gateway_on(tmp_path) as gw:
        reg = gw.client().register("/d", launcher=echo_launcher("--idle-timeout", "0"), warm=True)
        session = gw.client().wait_ready(reg.id, timeout=30)
        kill(session["job_id"])
        ended = session_of(gw, reg.id, "failed")
        assert ended["reason"] == "the viz server ended (killed by SIGKILL)"
        assert "echo server on 127.0.0.1" in ended["log_tail"]


# -------------------------------------------------------- jobs nobody wants
def test_a_job_the_registry_forgot_is_stopped_with_a_log_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="prefect_hpcviz.viz.gateway.launch")
    # A job an earlier gateway started on this state folder, whose row is gone.
    spec = JobSpec("hpcviz-lost", [sys.executable, "-c", "import time; time.sleep(60)"], workdir=tmp_path)
    lost = asyncio.run(LocalBackend(tmp_path / "jobs").submit(spec))
    assert process_alive(lost)
    with gateway_on(tmp_path) as gw:
        kept = gw.client().register("/d", launcher=echo_launcher(), warm=True)
        running = gw.client().wait_ready(kept.id, timeout=30)
        wait_until(lambda: not process_alive(lost), 15, "the forgotten job is stopped")
        said = [r.getMessage() for r in caplog.records]
        assert any(f"stopping viz server job {lost}: no active session has it" in line for line in said)
        for _ in range(3):  # whole reaper passes later, the job a session has still runs
            gw.client().cull()
        assert process_alive(running["job_id"])
        assert gw.client().get(kept.id)["session"]["state"] == "ready"


def test_a_job_whose_session_ended_without_stopping_it_is_stopped(tmp_path):
    with gateway_on(tmp_path) as gw:
        reg = gw.client().register("/d", launcher=echo_launcher("--idle-timeout", "0"), warm=True)
        session = gw.client().wait_ready(reg.id, timeout=30)
        # As if the stop had failed (the node did not answer): the row says stopped, the job runs.
        gw.parts.registry.update_session(session["id"], state="stopped", reason="stopped by an operator")
        assert process_alive(session["job_id"])
        wait_until(lambda: not process_alive(session["job_id"]), 15, "the reaper stops the job")


def test_the_local_backend_lists_the_jobs_of_its_folder_that_still_run(tmp_path):
    async def scenario():
        first, second = LocalBackend(tmp_path, grace_s=0.5), LocalBackend(tmp_path)
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        running = await first.submit(JobSpec("a", sleeper, workdir=tmp_path))
        stopped = await first.submit(JobSpec("b", sleeper, workdir=tmp_path))
        ended = await first.submit(JobSpec("c", [sys.executable, "-c", "pass"], workdir=tmp_path))
        await first.stop(stopped)
        while not (await first.state(ended)).state.ended:
            await asyncio.sleep(0.02)
        assert set(await first.list_jobs()) == {running}
        assert set(await second.list_jobs()) == {running}  # another instance (a restarted gateway) sees it too
        assert (await second.list_jobs())[running].state.value == "running"
        await second.stop(running)
        assert await first.list_jobs() == {} and await second.list_jobs() == {}

    asyncio.run(scenario())


# ------------------------------------------------ how often, and not what is being stopped
def test_reconciliation_with_the_backends_runs_on_its_own_slower_interval(tmp_path):
    with gateway_on(tmp_path, reap_interval_s=3600) as gw:
        sessions = gw.parts.sessions
        reg = gw.client().register("/d", launcher=echo_launcher("--idle-timeout", "0"), warm=True)
        session = gw.client().wait_ready(reg.id, timeout=30)
        wait_until(lambda: sessions.reconciliations == 1, 15, "the first reconciliation (at the first pass)")
        # A job no active session has: the next reconciliation stops it, the culling passes do not.
        gw.parts.registry.update_session(session["id"], state="stopped", reason="stopped by an operator")
        passes = sessions.culling_passes
        wait_until(lambda: sessions.culling_passes >= passes + 10, 30, "ten more culling passes")
        assert sessions.reconciliations == 1
        assert process_alive(session["job_id"])
        gw.client().cull()  # an operator's sweep reconciles at once
        assert sessions.reconciliations == 2
        wait_until(lambda: not process_alive(session["job_id"]), 15, "the forgotten job is stopped")


def test_the_reaper_leaves_alone_a_job_whose_stop_is_under_way(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="prefect_hpcviz.viz.gateway.launch")
    stubborn = {  # a job that takes its time to stop: it ignores SIGTERM, so the stop waits grace_s
        "kind": "local",
        "options": {
            "grace_s": 4,
            "command": [
                "{python}",
                "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(60)",
            ],
        },
    }
    with gateway_on(tmp_path, reap_interval_s=3600) as gw:
        reg = gw.client().register("/d", launcher=stubborn, warm=True)
        session = session_of(gw, reg.id, "starting")
        wait_until(lambda: "up" in job_log(tmp_path, session["job_id"]), 20, "the job's first line")
        stopping = threading.Thread(target=gw.client().revoke, args=(reg.id,))
        stopping.start()
        try:
            wait_until(
                lambda: gw.parts.registry.get_session(session["id"]).state == "stopped",
                10,
                "the session is marked stopped while its job still runs",
            )
            assert process_alive(session["job_id"]), "the stop must still be under way for this test"
            gw.client().cull()  # a reconciliation now, mid-stop
        finally:
            stopping.join(30)
        wait_until(lambda: not process_alive(session["job_id"]), 15, "the stop ends the job")
        said = [r.getMessage() for r in caplog.records]
        assert not any(session["job_id"] in line and "no active session has it" in line for line in said), said


def test_the_reconciliation_interval_is_a_setting_of_the_config_file_and_the_command_line(tmp_path):
    from prefect_hpcviz.viz.errors import InputError
    from prefect_hpcviz.viz.gateway.config import GatewayConfig
    from prefect_hpcviz.viz.gateway.run import config_from_args

    assert GatewayConfig(state_dir=tmp_path).reap_interval_s == 60
    settings = tmp_path / "gateway.yaml"
    settings.write_text("reap_interval_s: 300\n")
    assert config_from_args(["--config", str(settings)]).reap_interval_s == 300
    assert config_from_args(["--config", str(settings), "--reap-interval", "30"]).reap_interval_s == 30
    with pytest.raises(InputError, match="reap_interval_s"):
        GatewayConfig(state_dir=tmp_path, reap_interval_s=0)
