"""Viz servers as Azure Batch tasks, through the real azure-batch SDK and an HTTP test double.

The double (``tests/azure_batch_double.py``) checks the SDK's SharedKey
signature on every request and runs each task as a real local process through
``LocalDispatcher``, so the viz server in these tests really starts, listens
and reports. Blob staging runs against Azurite. ``test_live_batch_account``
runs against a real account when its environment is set (see there).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from azure_batch_double import BatchDouble  # noqa: E402

from prefect_hpcviz.viz.backends import JobSpec, JobState, get_backend  # noqa: E402
from prefect_hpcviz.viz.backends.azure_batch import AzureBatchBackend  # noqa: E402
from prefect_hpcviz.viz.backends.batch_dispatch import LocalDispatcher  # noqa: E402
from prefect_hpcviz.viz.backends.batch_tasks import InputFile, OutputFile, TaskSpecification  # noqa: E402
from prefect_hpcviz.viz.errors import InputError, LaunchError  # noqa: E402

SERVE = "prefect_hpcviz.viz.serve"
READY = re.compile(r"hpcviz-serve: ready on http://127\.0\.0\.1:(\d+)/")


@pytest.fixture
def double(tmp_path):
    with BatchDouble(tmp_path / "nodes") as batch:
        batch.add_pool("viz", vm_size="STANDARD_D2S_V3", nodes=1, slots_per_node=2)
        yield batch


def batch_backend(double: BatchDouble, **options) -> AzureBatchBackend:
    settings = {
        "account_url": double.url, "account_name": double.account_name, "account_key": double.account_key,
        "pool_id": "viz", "python": sys.executable, "serve_host": "127.0.0.1", "stop_timeout_s": 30,
        **options,
    }  # fmt: skip
    return get_backend("azure_batch", settings)


def serve_spec(data: str, key: str = "k3y", idle: int = 120) -> JobSpec:
    argv = ["--app", "explorer", "--data", data, "--idle-timeout", str(idle)]
    return JobSpec("hpcviz-test", [sys.executable, "-m", SERVE, *argv], env={"HPCVIZ_SESSION_KEY": key},
                   assignment={"app": "explorer", "argv": argv})  # fmt: skip


async def until(probe, what: str, timeout: float = 90.0):
    """Await ``probe()`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


async def ended(backend, job_id: str, timeout: float = 60.0):
    async def probe():
        status = await backend.state(job_id)
        return status if status.state.ended else None

    return await until(probe, f"job {job_id} to end", timeout)


# ------------------------------------------------------------------ the viz server as a task
async def test_a_viz_server_task_waits_for_a_node_runs_listens_and_stops_on_request(double, small_reduced):
    double.resize("viz", 0)
    backend = batch_backend(double)
    job_id = await backend.submit(serve_spec(str(small_reduced.path)))

    queued = await backend.state(job_id)
    assert queued.state is JobState.QUEUED
    assert "pool viz has no nodes" in queued.reason and "resize" in queued.reason

    double.resize("viz", 1)
    logs = await until(lambda: _ready_logs(backend, job_id), "the viz server's ready line")
    port = int(READY.search(logs).group(1))
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # it really listens

    running = await backend.state(job_id)
    assert running.state is JobState.RUNNING and running.node == "127.0.0.1"
    assert 3000 < running.ends_at - time.time() <= 3600, "the walltime (1 h) gives the end time"
    assert job_id in await backend.list_jobs()

    batch_job, task_id = job_id.split(":")
    process = double.process_of(batch_job, task_id)
    assert process.poll() is None
    await backend.stop(job_id)
    assert process.poll() is not None, "terminate ended the server's process"
    status = await backend.state(job_id)
    assert status.state is JobState.DONE and status.reason == "stopped on request"
    restarted = batch_backend(double)  # a gateway restart: the answer comes from Batch, not memory
    assert (await restarted.state(job_id)).reason == "stopped on request"
    assert job_id not in await restarted.list_jobs()
    assert double.auth_failures == 0
    task = double.tasks[(batch_job, task_id)].body
    assert "k3y" not in task["commandLine"], "the session key is never on the command line"
    assert {"name": "HPCVIZ_SESSION_KEY", "value": "k3y"} in task["environmentSettings"]


async def _ready_logs(backend, job_id):
    text = await backend.logs(job_id)
    return text if READY.search(text) else None


async def test_a_server_that_fails_at_start_gives_the_exit_code_and_its_log(double, tmp_path):
    backend = batch_backend(double)
    job_id = await backend.submit(serve_spec(str(tmp_path / "no-such-data")))
    status = await ended(backend, job_id)
    assert status.state is JobState.FAILED and status.reason == "exit code 2"
    assert "no-such-data" in await backend.logs(job_id, tail=20)


async def test_a_server_on_a_node_that_became_unusable_is_failed_with_the_nodes_error(double, small_reduced):
    backend = batch_backend(double)
    job_id = await backend.submit(serve_spec(str(small_reduced.path)))
    await until(lambda: _ready_logs(backend, job_id), "the viz server's ready line")
    node = double.tasks[tuple(job_id.split(":"))].node[1]
    double.set_node_state("viz", node, "unusable", [{"code": "DiskFull", "message": "The VM disk is full"}])
    status = await backend.state(job_id)
    assert status.state is JobState.FAILED
    assert f"node {node} of pool viz is unusable" in status.reason and "DiskFull" in status.reason
    await backend.stop(job_id)


async def test_tasks_beyond_the_pools_slots_wait_with_the_reason(double, tmp_path):
    backend = batch_backend(double)
    sleeper = JobSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    first, second = await backend.submit(sleeper), await backend.submit(sleeper)
    third = await backend.submit(sleeper)
    assert (await backend.state(first)).state is JobState.RUNNING
    waiting = await backend.state(third)
    assert waiting.state is JobState.QUEUED and waiting.reason == "waiting for a free task slot on pool viz's 1 node(s)"
    assert set(await backend.list_jobs()) == {first, second, third}
    never = await backend.submit(sleeper)
    await backend.stop(never)  # stopped while it waits for a slot: it never runs
    assert (await backend.state(never)).reason == "stopped on request"
    assert double.process_of(*never.split(":")) is None
    await backend.stop(first)
    assert (await until(lambda: _running(backend, third), "the third task to get the freed slot")).state is JobState.RUNNING
    for job_id in (second, third):
        await backend.stop(job_id)


async def _running(backend, job_id):
    status = await backend.state(job_id)
    return status if status.state is JobState.RUNNING else None


# ------------------------------------------------------------------------- settings and secrets
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"account_url": "batch.example.com"}, "account_url"),
        ({"pool_id": "no spaces allowed"}, "pool_id"),
        ({"gpus": -1}, "gpus"),
        ({"walltime": "an hour"}, "walltime"),
        ({"auth": "shared_key", "account_key": None, "account_key_env": "HPCVIZ_NO_SUCH_VAR"}, "account_key"),
        ({"auth": "kerberos"}, "auth"),
        ({"vm_size": "Standard_D2s_v3", "gpus": 1}, "vm_size"),
        ({"logs_container": "logs"}, "logs_container"),
    ],
)
def test_bad_settings_are_input_errors_naming_the_setting(double, options, named):
    with pytest.raises(InputError) as error:
        batch_backend(double, **options)
    assert error.value.input.startswith(named)


@pytest.mark.parametrize(
    ("options", "named", "problem"),
    [
        ({"pool_id": "nopool"}, "pool_id", "no such pool"),
        ({"vm_size": "Standard_NC6s_v3"}, "vm_size", "pool viz has STANDARD_D2S_V3 nodes"),
        ({"gpus": 1}, "gpus", "without GPUs"),
    ],
)
async def test_settings_the_pool_contradicts_fail_the_first_submit_naming_the_setting(double, options, named, problem):
    backend = batch_backend(double, **options)
    with pytest.raises(InputError) as error:
        await backend.submit(JobSpec("x", ["true"]))
    assert error.value.input.startswith(named) and problem in str(error.value)
    assert not double.tasks


async def test_the_key_never_shows_in_reprs_logs_or_errors(double, caplog):
    caplog.set_level(logging.DEBUG)
    backend = batch_backend(double)
    job_id = await backend.submit(JobSpec("hello", [sys.executable, "-c", "print('hi')"]))
    await ended(backend, job_id)

    wrong = batch_backend(double, account_key="d3Jvbmcta2V5LWZvci10aGUtZG91Ymxl")
    with pytest.raises(LaunchError) as error:
        await wrong.submit(JobSpec("hello", ["true"]))
    assert "refused the credentials" in str(error.value) and double.auth_failures == 1

    from prefect_hpcviz.blocks import AzureBatchLauncher

    block = AzureBatchLauncher(account_url=double.url, account_name=double.account_name, pool_id="viz",
                               account_key=double.account_key)  # fmt: skip
    shown = [repr(backend), str(backend), repr(wrong), str(error.value), repr(error.value.__cause__),
             caplog.text, repr(block), json.dumps(block.launcher_spec()), repr(backend._account_key)]  # fmt: skip
    for text in shown:
        assert double.account_key not in text and "d3Jvbmcta2V5" not in text
    assert "account_key" not in block.launcher_spec()["options"], "the gateway reads the key from its own environment"


def test_without_a_key_the_backend_uses_entra_id(double):
    from azure.identity import DefaultAzureCredential

    backend = batch_backend(double, account_key=None, account_key_env="HPCVIZ_NO_SUCH_VAR")
    assert backend.auth == "entra"
    assert isinstance(backend.client()._config.credential, DefaultAzureCredential)
    # (azure-core sends bearer tokens over https only, so the loopback double cannot take one)


def test_a_task_specification_survives_the_trip_through_batch_json():
    from azure.batch._utils.model_base import SdkJSONEncoder

    spec = TaskSpecification(
        "t-1", ["python3", "-c", "print('a b')"], env={"A": "1"},
        inputs=[InputFile("https://acct.blob.core.windows.net/runs", "run1/", "data")],
        outputs=[OutputFile("out/**/*", "https://acct.blob.core.windows.net/res", "run1", "success")],
        max_wall_clock_s=5400,
    )  # fmt: skip
    wire = json.loads(json.dumps(spec.to_batch(identity="/id/viz"), cls=SdkJSONEncoder, exclude_readonly=True))
    assert wire["resourceFiles"][0]["identityReference"] == {"resourceId": "/id/viz"}
    assert wire["outputFiles"][0]["uploadOptions"] == {"uploadCondition": "tasksuccess"}
    back = TaskSpecification.from_batch(wire)
    assert (back.command, back.env, back.inputs, back.outputs, back.max_wall_clock_s) == (
        spec.command, spec.env, spec.inputs, spec.outputs, 5400
    )
    with pytest.raises(InputError, match="Blob containers over HTTP"):
        InputFile("file:///data", "run/").to_batch()


def test_the_servers_task_stages_az_data_uploads_its_log_and_reports_the_nodes_address(tmp_path):
    backend = AzureBatchBackend("https://acct.westeurope.batch.azure.com", "viz", account_key="a2V5", python="echo",
                                setup=["echo setup-ran"], storage_account_url="https://data.blob.core.windows.net",
                                logs_container="logs")  # fmt: skip
    task = backend.task_specification(serve_spec("az://runs/sim/run.pvd"), "t1")
    assert task.inputs == [InputFile("https://data.blob.core.windows.net/runs", "sim/", "data")], "a file comes with its folder"
    assert task.outputs == [OutputFile("../std*.txt", "https://data.blob.core.windows.net/logs", "hpcviz-viz/t1", "completion")]
    folder = backend.task_specification(serve_spec("az://runs/reduced/3f2a"), "t2")
    assert folder.inputs == [InputFile("https://data.blob.core.windows.net/runs", "reduced/3f2a/", "data/3f2a")]

    result = LocalDispatcher(tmp_path).run(TaskSpecification("t1", task.command))  # the script as a node runs it
    printed = (result.task_dir / "stdout.txt").read_text()
    assert result.exit_code == 0 and printed.startswith("setup-ran\n")
    arguments = printed.splitlines()[1].split()
    assert arguments[arguments.index("--data") + 1] == "data/run.pvd"
    assert arguments[arguments.index("--host") + 1] == "0.0.0.0"
    advertised = arguments[arguments.index("--advertise-host") + 1]
    assert advertised and "$" not in advertised, "the node's address, filled in by the shell"


def test_the_backend_is_registered_and_its_sdk_import_is_lazy():
    import subprocess

    code = ("import sys; from prefect_hpcviz.viz.backends import backend_kinds; "
            "assert 'azure_batch' in backend_kinds(); assert 'azure.batch' not in sys.modules")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- through the gateway
async def test_the_gateway_launches_a_batch_task_that_reports_ready_then_stops_it(double, small_reduced, tmp_path, monkeypatch):
    from prefect_hpcviz.viz.gateway import EmbeddedGateway

    monkeypatch.setenv("HPCVIZ_TEST_BATCH_KEY", double.account_key)
    launcher = {"kind": "azure_batch", "options": {
        "account_url": double.url, "account_name": double.account_name, "account_key_env": "HPCVIZ_TEST_BATCH_KEY",
        "pool_id": "viz", "python": sys.executable, "serve_host": "127.0.0.1"}}  # fmt: skip

    def scenario():
        with EmbeddedGateway(state_dir=tmp_path / "gw", launch_timeout_s=120, poll_interval_s=0.5) as gateway, gateway.client() as client:
            reg = client.register(str(small_reduced.path), title="batch run", launcher=launcher, warm=True)
            status = _wait_status(client, reg.id, lambda s: s["state"] in ("ready", "failed"))
            assert status["state"] == "ready", status
            session = client.get(reg.id)["session"]
            admin = {"Authorization": f"Bearer {gateway.admin_token}"}
            logs = httpx.get(f"{gateway.local_url}/api/sessions/{session['id']}/logs", headers=admin, trust_env=False)
            assert "hpcviz-serve: ready on http://127.0.0.1:" in logs.text
            process = double.process_of(*session["job_id"].split(":"))
            assert process.poll() is None
            stopped = httpx.post(f"{gateway.local_url}/api/sessions/{session['id']}/stop", headers=admin, trust_env=False, timeout=60)
            assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
            assert process.poll() is not None

            bad = client.register(str(tmp_path / "missing-data"), launcher=launcher, warm=True)
            failed = _wait_status(client, bad.id, lambda s: s["state"] == "failed")
            assert "exit code 2" in failed["reason"] and "missing-data" in failed["log_tail"]

    await asyncio.to_thread(scenario)


def _wait_status(client, viz_id: str, predicate, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(viz_id)["status"]
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"last status {status}"
        time.sleep(0.2)  # poll interval of a condition with a deadline


# --------------------------------------------------------------------------------- Blob (Azurite)
@pytest.mark.azurite
async def test_data_staged_from_blob_serves_and_the_log_outlives_the_node(azurite, small_reduced, tmp_path):
    import fsspec
    from azure.core.credentials import AzureNamedKeyCredential

    fs = fsspec.filesystem("az", **azurite.storage_options)
    data, logs = azurite.new_container("data"), azurite.new_container("logs")
    fs.put(str(small_reduced.path), f"{data}/reduced/run1", recursive=True)
    identity = AzureNamedKeyCredential(azurite.account_name, azurite.account_key)  # the pool's managed identity
    with BatchDouble(tmp_path / "nodes", blob_credential=identity) as double:
        double.add_pool("viz", nodes=1)
        backend = batch_backend(double, storage_account_url=azurite.blob_endpoint, logs_container=logs,
                                storage_identity="/subscriptions/0/uami/viz", storage_account_key=azurite.account_key)  # fmt: skip
        job_id = await backend.submit(serve_spec(f"az://{data}/reduced/run1"))
        text = await until(lambda: _ready_logs(backend, job_id), "the viz server on staged data")
        socket.create_connection(("127.0.0.1", int(READY.search(text).group(1))), timeout=5).close()
        batch_job, task_id = job_id.split(":")
        staged = double.tasks[(batch_job, task_id)].task_dir / "wd" / "data" / "run1"
        assert sorted(p.name for p in staged.iterdir()) == sorted(p.name for p in Path(small_reduced.path).iterdir())
        body = double.tasks[(batch_job, task_id)].body
        assert body["resourceFiles"][0]["identityReference"] == {"resourceId": "/subscriptions/0/uami/viz"}

        await backend.stop(job_id)
        double.delete_task_files(batch_job, task_id)  # the node is gone
        uploaded = fs.cat(f"{logs}/{batch_job}/{task_id}/stdout.txt").decode()
        assert READY.search(uploaded)
        assert READY.search(await backend.logs(job_id)), "logs() falls back to the uploaded copy"


@pytest.mark.azurite
def test_the_local_dispatcher_runs_a_specification_with_blob_inputs_and_outputs(azurite, tmp_path):
    import fsspec
    from azure.core.credentials import AzureNamedKeyCredential

    fs = fsspec.filesystem("az", **azurite.storage_options)
    inputs, results = azurite.new_container("in"), azurite.new_container("out")
    fs.pipe({f"{inputs}/run/a.txt": b"alpha", f"{inputs}/run/sub/b.txt": b"beta", f"{inputs}/single.txt": b"one"})
    local = tmp_path / "local-input"
    local.mkdir()
    (local / "c.txt").write_text("gamma")
    script = ("import pathlib; p = pathlib.Path('out'); p.mkdir(); "
              "(p / 'joined.txt').write_text(open('data/a.txt').read() + open('data/sub/b.txt').read() "
              "+ open('single.txt').read() + open('extra/c.txt').read()); print('done')")  # fmt: skip
    base = f"{azurite.blob_endpoint}"
    spec = TaskSpecification(
        "dispatch-1", [sys.executable, "-c", script],
        inputs=[InputFile(f"{base}/{inputs}", "run/", "data"), InputFile(f"{base}/{inputs}", "single.txt"),
                InputFile(local.as_uri(), "", "extra")],
        outputs=[OutputFile("out/**/*", f"{base}/{results}", "run1", "success"),
                 OutputFile("../stdout.txt", f"{base}/{results}", "run1/stdout.txt", "completion"),
                 OutputFile("../stderr.txt", f"{base}/{results}", "run1/failed.txt", "failure")],
    )  # fmt: skip
    dispatcher = LocalDispatcher(tmp_path / "tasks", blob_credential=AzureNamedKeyCredential(azurite.account_name, azurite.account_key))
    result = dispatcher.run(spec, timeout=60)
    assert result.exit_code == 0 and result.failure is None
    assert fs.cat(f"{results}/run1/joined.txt") == b"alphabetaonegamma"
    assert fs.cat(f"{results}/run1/stdout.txt") == b"done\n"
    assert not fs.exists(f"{results}/run1/failed.txt"), "a failure-only output is not uploaded on success"

    missing = TaskSpecification("dispatch-2", ["true"], inputs=[InputFile(f"{base}/{inputs}", "nothing/", "data")])
    failed = dispatcher.run(missing)
    assert failed.exit_code is None and failed.failure.code == "BlobDownloadMiscError" and "nothing/" in str(failed.failure)


# ------------------------------------------------------------------------------- a real account
LIVE_ENV = ("HPCVIZ_LIVE_BATCH_URL", "HPCVIZ_LIVE_BATCH_POOL")


@pytest.mark.skipif(
    not all(os.environ.get(name) for name in LIVE_ENV),
    reason="opt-in: set HPCVIZ_LIVE_BATCH_URL and HPCVIZ_LIVE_BATCH_POOL (plus AZURE_BATCH_ACCOUNT_KEY, or an "
    "Entra ID identity) to run against a real Batch account. This is the one test allowed to skip in CI: "
    "CI has no Azure account and no network beyond package registries.",
)
async def test_live_batch_account():
    """A real account: one short task on the given pool, its state through to done, and its output."""
    backend = AzureBatchBackend(
        account_url=os.environ["HPCVIZ_LIVE_BATCH_URL"], pool_id=os.environ["HPCVIZ_LIVE_BATCH_POOL"],
        account_name=os.environ.get("AZURE_BATCH_ACCOUNT_NAME"), job_id=os.environ.get("HPCVIZ_LIVE_BATCH_JOB", "hpcviz-live-test"),
        walltime="00:10:00",
    )  # fmt: skip
    marker = uuid.uuid4().hex
    job_id = await backend.submit(JobSpec("hpcviz-live", ["/bin/sh", "-c", f"echo {marker}; hostname"]))
    status = await ended(backend, job_id, timeout=float(os.environ.get("HPCVIZ_LIVE_BATCH_TIMEOUT_S", "900")))
    assert status.state is JobState.DONE, status
    assert marker in await backend.logs(job_id)


# ------------------------------------------------------------------------ Dask workers on Batch
def test_dask_workers_as_batch_tasks_compute_are_replaced_when_they_die_and_end_with_the_cluster(double):
    import signal

    from distributed import Client

    from prefect_hpcviz.viz.backends.azure_batch_dask import AzureBatchCluster

    backend = batch_backend(double, job_id="hpcviz-dask")
    with AzureBatchCluster(backend, n_workers=2, scheduler_host="127.0.0.1", check_interval_s=0.5) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            assert client.submit(lambda x: x * 2, 21).result(timeout=60) == 42
            first = cluster.job_ids()
            assert len(first) == 2 and all(double.tasks[tuple(j.split(":"))].state == "running" for j in first)

            victim = double.process_of(*first[0].split(":"))
            os.killpg(victim.pid, signal.SIGKILL)  # the node was preempted
            deadline = time.monotonic() + 120
            while not (len(set(cluster.job_ids()) - set(first)) == 1 and len(client.scheduler_info()["workers"]) == 2):
                assert time.monotonic() < deadline, f"no replacement worker; jobs {cluster.job_ids()}"
                time.sleep(0.2)  # poll interval of a condition with a deadline
            assert client.submit(lambda x: x + 1, 1).result(timeout=60) == 2
            everyone = set(first) | set(cluster.job_ids())
    for job_id in everyone:
        assert double.tasks[tuple(job_id.split(":"))].state == "completed", "closing the cluster ended every task"
        process = double.process_of(*job_id.split(":"))
        assert process.poll() is not None


@pytest.mark.azurite
def test_a_dataset_in_blob_is_reduced_on_batch_dask_workers_from_the_block(azurite, small_simulation, tmp_path, monkeypatch):
    import fsspec

    from prefect_hpcviz.blocks import AzureBatchDaskCluster, AzureBatchLauncher
    from prefect_hpcviz.viz.datasets import open_dataset
    from prefect_hpcviz.viz.reduce import reduce_dataset

    monkeypatch.setenv("HPCVIZ_CACHE_DIR", str(tmp_path / "cache"))
    fs = fsspec.filesystem("az", **azurite.storage_options)
    container = azurite.new_container("sim")
    fs.put(str(small_simulation.parent), f"{container}/run", recursive=True)
    source = f"az://{container}/run/{small_simulation.name}"
    with BatchDouble(tmp_path / "nodes") as double:
        double.add_pool("reduce", nodes=1, slots_per_node=2)
        batch = AzureBatchLauncher(account_url=double.url, account_name=double.account_name, account_key=double.account_key,
                                   pool_id="reduce", python=sys.executable)  # fmt: skip
        block = AzureBatchDaskCluster(batch=batch, scheduler_host="127.0.0.1", maximum_workers=2)
        with block.get_client() as client:
            dataset = open_dataset(source, storage_options=azurite.storage_options)
            reduced = reduce_dataset(dataset, {"steps": [{"coarsen": {"factor": 2}}]}, tmp_path / "out", client=client)
            worker_tasks = [t for t in double.tasks.values() if t.job_id == "hpcviz-dask"]
            assert 1 <= len(worker_tasks) <= 2, "adaptive, at most maximum_workers tasks"
        assert (Path(reduced.path) / "manifest.json").exists()
        assert all(t.state == "completed" for t in double.tasks.values()), "the cluster's tasks end with it"


def test_the_blocks_save_and_load_with_the_key_kept_secret(prefect_harness):
    from prefect_hpcviz.blocks import AzureBatchDaskCluster, AzureBatchLauncher

    name = f"batch-{uuid.uuid4().hex[:8]}"
    AzureBatchLauncher(account_url="https://acct.westeurope.batch.azure.com", pool_id="viz-gpu",
                       vm_size="Standard_NC4as_T4_v3", gpus=1, account_key="c2VjcmV0LWtleQ==").save(name)  # fmt: skip
    loaded = AzureBatchLauncher.load(name)
    assert loaded.account_key.get_secret_value() == "c2VjcmV0LWtleQ=="
    assert "c2VjcmV0LWtleQ" not in repr(loaded) + json.dumps(loaded.launcher_spec())
    assert loaded.launcher_spec() == {"kind": "azure_batch", "options": {
        "account_url": "https://acct.westeurope.batch.azure.com", "pool_id": "viz-gpu", "auth": "auto",
        "account_key_env": "AZURE_BATCH_ACCOUNT_KEY", "job_id": "hpcviz-viz", "vm_size": "Standard_NC4as_T4_v3",
        "gpus": 1, "python": "python3", "serve_host": "0.0.0.0", "walltime": "01:00:00", "storage_key_env": "AZURE_STORAGE_KEY"}}
    assert loaded.backend().auth == "shared_key"

    AzureBatchDaskCluster(batch=loaded, scheduler_host="10.0.0.4", maximum_workers=4).save(f"{name}-dask")
    cluster = AzureBatchDaskCluster.load(f"{name}-dask")
    assert cluster.adapt_kwargs() == {"minimum": 0, "maximum": 4}
    assert cluster.cluster_kwargs()["backend"]["job_id"] == "hpcviz-dask"
    runner = cluster.task_runner()
    assert copy.deepcopy(runner).cluster_kwargs == runner.cluster_kwargs, "prefect-dask may copy its runner"
    assert "c2VjcmV0LWtleQ" not in repr(runner.cluster_kwargs)

    with pytest.raises(InputError) as error:
        AzureBatchLauncher(account_url="https://acct.westeurope.batch.azure.com", pool_id="viz", walltime="soon").launcher_spec()
    assert error.value.input.startswith("walltime")


def test_the_double_answers_the_sdks_job_terminate_and_delete_operations(double):
    """The double itself: the SDK's long-running job operations and lists, with SharedKey checked."""
    from azure.batch import BatchClient, models
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.exceptions import ResourceNotFoundError

    client = BatchClient(double.url, AzureNamedKeyCredential(double.account_name, double.account_key))
    assert [pool.id for pool in client.list_pools()] == ["viz"]
    for job_id in ("to-terminate", "to-delete"):
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id="viz")))
        client.create_task(job_id, TaskSpecification("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"]).to_batch())
    deadline = time.monotonic() + 30
    while not all(double.process_of(j, "sleeper") for j in ("to-terminate", "to-delete")):
        assert time.monotonic() < deadline
        time.sleep(0.05)  # poll interval of a condition with a deadline
    processes = [double.process_of(j, "sleeper") for j in ("to-terminate", "to-delete")]

    reason = models._models.BatchJobTerminateOptions(termination_reason="done")  # the SDK cannot send an empty body
    client.begin_terminate_job("to-terminate", reason, polling_interval=0).result()
    assert client.get_job("to-terminate").state == "completed"
    client.begin_delete_job("to-delete", polling_interval=0).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job("to-delete")
    for process in processes:
        process.wait(timeout=30)  # their tasks' processes end
    assert {job.id for job in client.list_jobs()} == {"to-terminate"}
    assert double.auth_failures == 0
