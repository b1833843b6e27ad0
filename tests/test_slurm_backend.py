"""SlurmBackend: job scripts from settings; real sbatch/scontrol/scancel on the CI's one-node Slurm."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time

import psutil
import pytest

from prefect_hpcviz.viz.backends import JobSpec, JobState, get_backend
from prefect_hpcviz.viz.backends.slurm import SlurmBackend
from prefect_hpcviz.viz.errors import InputError, LaunchError

KEY = "s3cret-session-key"


def _spec(command: list[str], name: str = "hpcviz-test") -> JobSpec:
    return JobSpec(name, command, env={"HPCVIZ_SESSION_KEY": KEY, "HPCVIZ_TITLE": "run 'one'"})


async def wait_for(backend, job_id, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        status = await backend.state(job_id)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status}"
        await asyncio.sleep(0.1)


def squeue_ids() -> set[str]:
    return set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split())


# ------------------------------------------------------------ without Slurm
def test_the_job_script_carries_the_settings_and_execs_the_server_without_any_secret():
    backend = SlurmBackend(
        workdir="/scratch/viz",
        partition="viz",
        account="proj42",
        walltime="02:00:00",
        cpus=4,
        memory="8G",
        gpus=1,
        gpu_type="a100",
        extra_directives=["--qos=interactive"],
        setup=["module load mesa/23"],
        apptainer_image="/apps/hpcviz.sif",
        python="/opt/venv/bin/python",
        serve_host="0.0.0.0",
    )
    spec = JobSpec("hpcviz-abc", ["/gw/python", "-m", "prefect_hpcviz.viz.serve"], env={"HPCVIZ_SESSION_KEY": KEY},
                   assignment={"app": "explorer", "argv": ["--app", "explorer", "--data", "/d"]})
    script = backend.job_script(spec, "/scratch/viz/.env-1")
    for line in ["#SBATCH --partition=viz", "#SBATCH --account=proj42", "#SBATCH --time=02:00:00",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8192M", "#SBATCH --gres=gpu:a100:1",
                 "#SBATCH --qos=interactive", "#SBATCH --export=NONE", "#SBATCH --output=/scratch/viz/hpcviz-%j.log",
                 "module load mesa/23"]:
        assert line in script.splitlines(), line
    assert script.rstrip().splitlines()[-1] == (
        "exec apptainer exec --nv /apps/hpcviz.sif /opt/venv/bin/python -m prefect_hpcviz.viz.serve "
        "--app explorer --data /d --host 0.0.0.0"
    )
    assert KEY not in script


def test_bad_settings_are_refused_naming_the_setting():
    with pytest.raises(InputError, match="walltime"):
        get_backend("slurm", {"walltime": "two hours"})
    with pytest.raises(InputError, match="memory"):
        get_backend("slurm", {"memory": "lots"})
    with pytest.raises(InputError, match="extra_directives"):
        get_backend("slurm", {"extra_directives": ["qos=x"]})
    with pytest.raises(InputError, match="workdir"):
        get_backend("slurm", {"command_nodes": ["login1"]})


# --------------------------------------------------------------- real Slurm
@pytest.mark.slurm
async def test_a_job_gets_its_key_from_a_private_file_that_is_gone_once_it_runs(slurm_cluster, tmp_path):
    backend = SlurmBackend(workdir=str(tmp_path / "jobs"), partition=slurm_cluster["partition"], memory="256M",
                           walltime="5")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    code = "import hashlib, os; print(hashlib.sha256(os.environ['HPCVIZ_SESSION_KEY'].encode()).hexdigest(), os.environ['HPCVIZ_TITLE'])"
    job = await backend.submit(_spec([sys.executable, "-c", code + "; import time; time.sleep(2); raise SystemExit(3)"]))
    env_files = list((tmp_path / "jobs").glob(".env-*"))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in env_files)
    assert (tmp_path / "jobs").stat().st_mode & 0o777 == 0o700
    running = await wait_for(backend, job, lambda s: s.state is JobState.RUNNING)
    assert running.node == slurm_cluster["node"] and running.ends_at is not None
    assert 0 < running.ends_at - time.time() <= 300
    status = await wait_for(backend, job, lambda s: s.state.ended)
    assert (status.state, status.reason) == (JobState.FAILED, "exit code 3")
    assert f"{digest} run 'one'" in await backend.logs(job)
    assert not list((tmp_path / "jobs").glob(".env-*")), "the key file is removed when the job starts"
    batch_script = subprocess.run(["scontrol", "write", "batch_script", job, "-"], capture_output=True, text=True).stdout
    assert "exec " in batch_script and KEY not in batch_script
    record = json.loads((tmp_path / "jobs" / f"hpcviz-{job}.exit").read_text())
    assert record["state"] == "failed" and record["reason"] == "exit code 3"
    # A gateway restarted on the same folder answers the same.
    again = SlurmBackend(workdir=str(tmp_path / "jobs"))
    assert (await again.state(job)).reason == "exit code 3"


@pytest.mark.slurm
async def test_stop_cancels_the_job_and_its_processes_are_gone(slurm_cluster, tmp_path):
    backend = SlurmBackend(workdir=str(tmp_path / "jobs"), memory="256M", walltime="5")
    job = await backend.submit(_spec(["sleep", "300"]))
    await wait_for(backend, job, lambda s: s.state is JobState.RUNNING)
    started = tmp_path / "jobs" / f"hpcviz-{job}.started"
    deadline = time.monotonic() + 30
    while not started.exists() or not started.read_text().strip():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    pid = json.loads(started.read_text())["pid"]
    assert psutil.Process(pid).name() == "sleep", "exec: the server itself is the job's main process"
    assert job in await backend.list_jobs()
    await backend.stop(job)
    assert job not in squeue_ids()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    status = await backend.state(job)
    assert (status.state, status.reason) == (JobState.DONE, "stopped on request")
    assert job not in await backend.list_jobs()


@pytest.mark.slurm
async def test_gateways_sharing_a_folder_list_only_their_own_jobs(slurm_cluster, tmp_path):
    """A gateway's reaper stops the jobs list_jobs gives it: another gateway's must never be among them."""
    mine, theirs = (SlurmBackend(workdir=str(tmp_path / "jobs"), memory="256M", walltime="5", gateway_id=g)
                    for g in ("gw-mine", "gw-theirs"))
    job = await mine.submit(_spec(["sleep", "300"]))
    try:
        await wait_for(mine, job, lambda s: s.state is JobState.RUNNING)
        assert job in await mine.list_jobs()
        assert job not in await theirs.list_jobs()
    finally:
        await mine.stop(job)


@pytest.mark.slurm
async def test_a_request_slurm_will_never_run_fails_with_its_reason_and_sbatch_refusals_say_why(slurm_cluster, tmp_path):
    too_wide = SlurmBackend(workdir=str(tmp_path / "jobs"), cpus=slurm_cluster["cpus"] + 1, memory="256M")
    job = await too_wide.submit(_spec(["sleep", "1"]))
    status = await wait_for(too_wide, job, lambda s: s.state is not JobState.QUEUED or s.reason)
    assert status.state is JobState.FAILED and "PartitionConfig" in status.reason
    await too_wide.stop(job)
    assert job not in squeue_ids()

    too_big = SlurmBackend(workdir=str(tmp_path / "jobs"), memory=f"{slurm_cluster['memory_mb'] + 1}M")
    with pytest.raises(LaunchError, match="sbatch refused .*Requested node configuration is not available"):
        await too_big.submit(_spec(["sleep", "1"]))
    assert not list((tmp_path / "jobs").glob(".env-*")), "a refused job leaves no key file behind"


@pytest.mark.slurm
async def test_a_job_slurm_never_heard_of_is_failed_not_an_error(slurm_cluster, tmp_path):
    status = await SlurmBackend(workdir=str(tmp_path)).state("99999999")
    assert status.state is JobState.FAILED and "never started" in status.reason
