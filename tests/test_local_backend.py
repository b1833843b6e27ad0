"""LocalBackend runs viz server jobs as local processes; get_backend builds backends by kind."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import psutil
import pytest

from prefect_hpcviz.viz.backends import (
    CommandError,
    JobSpec,
    JobState,
    LocalBackend,
    backend_kinds,
    get_backend,
    run_command,
)
from prefect_hpcviz.viz.errors import InputError

PY = sys.executable


async def wait_for_state(backend, job_id, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        status = await backend.state(job_id)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status}"
        await asyncio.sleep(0.02)


def pid_of(job_id):
    return int(job_id.split(".")[0])


def gone(pid, started_cs):
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() * 100 - started_cs) > 2 or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def backend(tmp_path):
    return LocalBackend(workdir=tmp_path / "jobs", grace_s=0.5)


async def test_a_job_that_succeeds_is_done_and_its_output_is_in_the_log(backend, tmp_path):
    spec = JobSpec(
        "hello",
        [PY, "-c", "import os; print('hi from', os.getcwd()); print('line 2')"],
        workdir=tmp_path / "cwd",
    )
    job = await backend.submit(spec)
    status = await wait_for_state(backend, job, lambda s: s.state.ended)
    assert status.state is JobState.DONE and status.reason == ""
    logs = await backend.logs(job)
    assert f"hi from {tmp_path / 'cwd'}" in logs and logs.endswith("line 2\n")
    assert await backend.logs(job, tail=1) == "line 2\n"
    assert (tmp_path / "jobs" / f"hello-{job}.log").exists()


async def test_a_job_that_fails_says_its_exit_code_and_keeps_stderr(backend, tmp_path):
    code = "import sys; print('cannot open dataset', file=sys.stderr); sys.exit(3)"
    job = await backend.submit(JobSpec("bad", [PY, "-c", code], workdir=tmp_path))
    status = await wait_for_state(backend, job, lambda s: s.state.ended)
    assert status.state is JobState.FAILED and status.reason == "exit code 3"
    assert "cannot open dataset" in await backend.logs(job)


async def test_a_missing_program_is_a_launch_error_naming_it(backend, tmp_path):
    from prefect_hpcviz.viz.errors import LaunchError

    with pytest.raises(LaunchError, match="no-such-program-xyz"):
        await backend.submit(JobSpec("x", ["no-such-program-xyz"], workdir=tmp_path))


async def test_secrets_reach_the_job_through_its_environment_not_its_command_line(
    backend, tmp_path, monkeypatch
):
    monkeypatch.setenv("HPCVIZ_TEST_INHERITED", "inherited")
    script = "import os, time; print(os.environ['HPCVIZ_SESSION_KEY'], os.environ['HPCVIZ_TEST_INHERITED'], flush=True); time.sleep(30)"
    job = await backend.submit(
        JobSpec("env", [PY, "-c", script], env={"HPCVIZ_SESSION_KEY": "s3cret"}, workdir=tmp_path)
    )
    try:
        await wait_for_state(backend, job, lambda s: s.state is JobState.RUNNING)
        proc = psutil.Process(pid_of(job))
        assert "s3cret" not in " ".join(proc.cmdline())
        assert proc.environ()["HPCVIZ_SESSION_KEY"] == "s3cret"
        deadline = time.monotonic() + 10
        while "s3cret inherited" not in await backend.logs(job):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert os.getsid(proc.pid) == proc.pid  # its own session: Ctrl-C of the gateway does not reach it
    finally:
        await backend.stop(job)


async def test_stop_ends_the_whole_process_group_gracefully(backend, tmp_path):
    script = "sleep 30 & echo child $!; wait"
    job = await backend.submit(JobSpec("group", ["sh", "-c", script], workdir=tmp_path))
    deadline = time.monotonic() + 10
    while "child" not in (logs := await backend.logs(job)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    child = int(logs.split()[1])
    started = time.monotonic()
    await backend.stop(job)
    assert time.monotonic() - started < 0.5 + 1.0  # SIGTERM was enough
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    status = await backend.state(job)
    assert status.state is JobState.DONE and status.reason == "stopped on request"


async def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(backend, tmp_path):
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    job = await backend.submit(JobSpec("stubborn", [PY, "-c", script], workdir=tmp_path))
    deadline = time.monotonic() + 10
    while "ready" not in await backend.logs(job):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    started = time.monotonic()
    await backend.stop(job)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 5
    assert gone(pid_of(job), int(job.split(".")[1]))


async def test_a_job_id_stays_valid_for_a_new_backend_after_a_gateway_restart(tmp_path):
    first = LocalBackend(workdir=tmp_path / "jobs", grace_s=0.5)
    job = await first.submit(JobSpec("long", [PY, "-c", "import time; time.sleep(60)"], workdir=tmp_path))
    await wait_for_state(first, job, lambda s: s.state is JobState.RUNNING)

    restarted = LocalBackend(workdir=tmp_path / "jobs", grace_s=0.5)
    assert (await restarted.state(job)).state is JobState.RUNNING
    await restarted.stop(job)
    assert gone(pid_of(job), int(job.split(".")[1]))
    status = await restarted.state(job)
    assert status.state is JobState.DONE and "stopped" in status.reason


async def test_a_reused_pid_is_not_mistaken_for_the_job(backend):
    me = psutil.Process(os.getpid())
    wrong_start = round(me.create_time() * 100) - 1000  # our pid, another start time
    job = f"{me.pid}.{wrong_start}"
    status = await backend.state(job)
    assert status.state is JobState.FAILED and "exit code unknown" in status.reason
    await backend.stop(job)  # must not signal this test process
    assert me.is_running()


async def test_a_malformed_job_id_is_an_input_error(backend):
    with pytest.raises(InputError, match="not a local job id"):
        await backend.state("slurm-123")


def test_get_backend_builds_by_kind_and_names_what_is_allowed(tmp_path):
    assert "local" in backend_kinds()
    local = get_backend("local", {"workdir": str(tmp_path), "grace_s": 1})
    assert isinstance(local, LocalBackend) and local.workdir == tmp_path and local.grace_s == 1.0
    with pytest.raises(InputError, match="unknown backend.*local"):
        get_backend("pbs", {})
    with pytest.raises(InputError, match="unknown option.*partition.*workdir, grace_s"):
        get_backend("local", {"partition": "gpu"})


async def test_run_command_returns_output_and_raises_with_everything_on_failure():
    ok = await run_command(["sh", "-c", "echo out; echo err >&2"])
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "out\n", "err\n")
    with pytest.raises(CommandError) as info:
        await run_command(["sh", "-c", "echo partial; echo 'sbatch: error: invalid partition' >&2; exit 1"])
    message = str(info.value)
    assert "sh -c" in message and "exit code 1" in message
    assert "partial" in message and "invalid partition" in message
    with pytest.raises(CommandError, match="no answer within 0.2 s"):
        await run_command(["sleep", "5"], timeout=0.2)
    with pytest.raises(CommandError, match="cannot run the program"):
        await run_command(["no-such-program-xyz"])


# ------------------------------------------------------------------- standby
async def test_closing_the_backend_stops_its_standby_servers(tmp_path):
    backend = LocalBackend(workdir=tmp_path / "jobs", grace_s=5)
    backend.warm_up("explorer")
    pids = backend.standby_pids()
    assert len(pids) == 1
    deadline = time.monotonic() + 10
    while "--standby" not in psutil.Process(pids[0]).cmdline():  # between fork and exec
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await backend.close()
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert backend.standby_pids() == []
    assert list((tmp_path / "jobs").glob(".standby-*")) == []


async def test_a_spec_without_an_assignment_runs_its_own_command_not_a_standby(tmp_path):
    backend = LocalBackend(workdir=tmp_path / "jobs", grace_s=0.5)
    backend.warm_up("explorer")
    waiting = backend.standby_pids()
    try:
        job = await backend.submit(JobSpec("own", [PY, "-c", "print('own command')"], workdir=tmp_path))
        assert pid_of(job) not in waiting
        await wait_for_state(backend, job, lambda s: s.state.ended)
        assert await backend.logs(job) == "own command\n"
        assert backend.standby_pids() == waiting
    finally:
        await backend.close()


async def test_no_standby_is_started_when_standby_is_0(tmp_path):
    backend = LocalBackend(workdir=tmp_path / "jobs", standby=0)
    backend.warm_up("explorer")
    assert backend.standby_pids() == []
    with pytest.raises(InputError, match="standby=-1"):
        get_backend("local", {"standby": -1})
