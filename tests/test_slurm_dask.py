"""Reductions on Dask workers that are Slurm jobs (SlurmDaskCluster) give what a LocalCluster gives."""

from __future__ import annotations

import subprocess

import numpy as np
import pyvista as pv
import pytest

from prefect_hpcviz.blocks import SlurmDaskCluster
from prefect_hpcviz.viz.datasets import write_synthetic
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset

pytestmark = pytest.mark.slurm

RECIPE = "steps:\n  - coarsen: {factor: 2, how: mean}\n  - contour: {field: pressure, values: [0.5]}\n  - slice: {normal: [0, 0, 1]}\n"


def _arrays(path) -> dict[str, np.ndarray]:
    mesh = pv.read(path)
    return {name: np.asarray(mesh[name]) for name in mesh.array_names} | {"points": np.asarray(mesh.points)}


def test_a_reduction_on_slurm_workers_equals_the_one_on_a_local_cluster(slurm_cluster, dask_client, tmp_path):
    sim = write_synthetic(tmp_path / "sim", shape=(32, 32, 32), steps=2)
    recipe = Recipe.from_yaml(RECIPE)
    local = reduce_dataset(sim, recipe, tmp_path / "local", client=dask_client)

    block = SlurmDaskCluster(
        partition=slurm_cluster["partition"],
        cores=1,
        memory="1GB",
        processes=1,
        walltime="00:10:00",
        jobs=2,
        log_directory=str(tmp_path / "worker-logs"),
    )
    with block.get_client() as client:
        client.wait_for_workers(1, timeout=120)
        jobs = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout.split()
        assert "dask-worker" in jobs, "the workers run as Slurm jobs"
        workers = client.scheduler_info()["workers"].values()
        assert {w["host"] for w in workers}, "a worker joined"
        on_slurm = reduce_dataset(sim, recipe, tmp_path / "slurm", client=client)

    assert not on_slurm.cached and on_slurm.path.name == local.path.name  # same inputs and recipe: same key
    assert [v.name for v in on_slurm.volume_files] == [v.name for v in local.volume_files]
    assert [layer.name for layer in on_slurm.layers] == [layer.name for layer in local.layers]
    for mine, theirs in zip(sorted(on_slurm.path.rglob("*.vt?")), sorted(local.path.rglob("*.vt?"))):
        assert mine.relative_to(on_slurm.path) == theirs.relative_to(local.path)
        a, b = _arrays(mine), _arrays(theirs)
        assert a.keys() == b.keys()
        for name in a:
            assert np.array_equal(a[name], b[name]), f"{mine.name}: {name} differs"


def test_settings_left_empty_come_from_the_sites_jobqueue_yaml(slurm_cluster):
    import dask

    with dask.config.set({"jobqueue.slurm.cores": 1, "jobqueue.slurm.memory": "1GB", "jobqueue.slurm.queue": slurm_cluster["partition"]}):
        cluster = SlurmDaskCluster().make_cluster()
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert f"#SBATCH -p {slurm_cluster['partition']}" in script and "--nthreads 1" in script


def test_missing_cores_and_memory_say_where_to_set_them():
    import dask

    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        with pytest.raises(InputError, match="jobqueue.yaml"):
            SlurmDaskCluster().make_cluster()


def test_the_task_runner_and_the_client_use_the_same_settings():
    block = SlurmDaskCluster(partition="debug", cores=2, memory="4GB", gpus=1, maximum_jobs=5,
                             job_script_prologue=["module load python"])
    runner = block.task_runner()
    assert "SLURMCluster" in str(runner.cluster_class)
    assert runner.cluster_kwargs == block.cluster_kwargs()
    assert runner.adapt_kwargs == {"minimum_jobs": 0, "maximum_jobs": 5}
    assert block.cluster_kwargs()["job_extra_directives"] == ["--gres=gpu:1"]


def _worker_of(x: int) -> tuple[int, str]:
    from distributed import get_worker

    return x * x, get_worker().address


def test_an_adaptive_cluster_submits_worker_jobs_when_there_is_work_up_to_its_maximum(slurm_cluster, tmp_path):
    block = SlurmDaskCluster(partition=slurm_cluster["partition"], cores=1, memory="1GB", processes=1,
                             walltime="00:10:00", maximum_jobs=1, log_directory=str(tmp_path))
    with block.get_client() as client:
        results = client.gather(client.map(_worker_of, range(20)))
        assert sum(r for r, _ in results) == sum(x * x for x in range(20))
        assert len({worker for _, worker in results}) == 1, "maximum_jobs=1: one worker job did it all"
