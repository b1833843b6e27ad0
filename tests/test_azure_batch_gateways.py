"""Two gateways on one Azure Batch job: each reaper stops only the tasks its own gateway added.

Each gateway tags the tasks it adds with the id kept in its database
(environment setting ``HPCVIZ_GATEWAY_ID``); its reaper lists only tasks with
that tag. Real gateways' session managers and registries, tasks run as real
local processes by the Batch HTTP test double, through the real azure-batch SDK.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from azure_batch_double import BatchDouble  # noqa: E402

from prefect_hpcviz.viz.backends import JobSpec, JobState  # noqa: E402
from prefect_hpcviz.viz.backends.azure_batch import GATEWAY_ID_SETTING  # noqa: E402
from prefect_hpcviz.viz.gateway.config import GatewayConfig  # noqa: E402
from prefect_hpcviz.viz.gateway.launch import SessionManager  # noqa: E402
from prefect_hpcviz.viz.gateway.registry import READY, Registry  # noqa: E402

SLEEPER = JobSpec("hpcviz-sleeper", [sys.executable, "-c", "import time; time.sleep(120)"])


@pytest.fixture
def double(tmp_path):
    with BatchDouble(tmp_path / "nodes") as batch:
        batch.add_pool("viz", vm_size="STANDARD_D2S_V3", nodes=1, slots_per_node=8)
        yield batch


def launcher_on(double: BatchDouble) -> dict:
    """One launcher, hence one Batch job (``hpcviz-viz``), for both gateways."""
    return {"kind": "azure_batch", "options": {
        "account_url": double.url, "account_name": double.account_name, "account_key": double.account_key,
        "pool_id": "viz", "python": sys.executable, "serve_host": "127.0.0.1", "stop_timeout_s": 30}}  # fmt: skip


def gateway_manager(state_dir: Path) -> SessionManager:
    return SessionManager(GatewayConfig(host="127.0.0.1", port=0, state_dir=state_dir),
                          Registry(state_dir / "registry.sqlite"))


async def a_session_with_a_task(manager: SessionManager, launcher: dict) -> str:
    """A ready session in the gateway's registry, its job a task this gateway added; the job id."""
    viz = manager.registry.add_visualization(data="/d", app="explorer", title="t", launcher=launcher)
    session = manager.registry.add_session(viz.id, "azure_batch")
    job_id = await manager.backend_for(launcher).submit(SLEEPER)
    manager.registry.update_session(session.id, state=READY, job_id=job_id)
    return job_id


def running(double: BatchDouble, job_id: str) -> bool:
    process = double.process_of(*job_id.split(":"))
    return process is not None and process.poll() is None


async def test_two_gateways_on_one_job_never_reap_each_others_tasks_and_each_stops_its_own_orphan(
    double, tmp_path
):
    launcher = launcher_on(double)
    first, second = gateway_manager(tmp_path / "gw1"), gateway_manager(tmp_path / "gw2")
    assert first.registry.gateway_id != second.registry.gateway_id
    try:
        first_session = await a_session_with_a_task(first, launcher)
        second_session = await a_session_with_a_task(second, launcher)
        # Orphans: tasks each gateway added whose session its registry does not have (lost row, failed stop).
        first_orphan = await first.backend_for(launcher).submit(SLEEPER)
        second_orphan = await second.backend_for(launcher).submit(SLEEPER)
        jobs = [first_session, second_session, first_orphan, second_orphan]
        assert len({job.split(":")[0] for job in jobs}) == 1, "all four tasks are in one Batch job"
        for job in jobs:
            status = await first.backend_for(launcher).state(job)
            assert status.state in (JobState.QUEUED, JobState.RUNNING), (job, status)

        assert await first.reap_forgotten_jobs() == [first_orphan]
        assert await second.reap_forgotten_jobs() == [second_orphan]

        backend = first.backend_for(launcher)
        assert (await backend.state(first_orphan)).state.ended
        assert (await backend.state(second_orphan)).state.ended
        for job in (first_session, second_session):
            assert not (await backend.state(job)).state.ended and running(double, job), f"{job} was reaped"
        # Nothing left to reap on a second pass of either gateway.
        assert await first.reap_forgotten_jobs() == [] and await second.reap_forgotten_jobs() == []
    finally:
        for manager in (first, second):
            for job in list(await manager.backend_for(launcher).list_jobs()):
                await manager.backend_for(launcher).stop(job)
            await manager.close()
            manager.registry.close()


async def test_the_tag_is_on_the_task_and_kept_across_a_gateway_restart(double, tmp_path):
    launcher = launcher_on(double)
    manager = gateway_manager(tmp_path / "gw")
    gateway_id = manager.registry.gateway_id
    job_id = await manager.backend_for(launcher).submit(SLEEPER)
    task = manager.backend_for(launcher).client().get_task(*job_id.split(":"))
    assert {s.name: s.value for s in task.environment_settings}[GATEWAY_ID_SETTING] == gateway_id
    await manager.close()
    manager.registry.close()

    restarted = gateway_manager(tmp_path / "gw")  # the same database: the same id, so its own orphans are still found
    try:
        assert restarted.registry.gateway_id == gateway_id
        restarted.backend_for(launcher)  # (a gateway asks the backends of the launchers it has used)
        assert await restarted.reap_forgotten_jobs() == [job_id]
        assert not running(double, job_id)
    finally:
        await restarted.close()
        restarted.registry.close()
