"""How a reduction runs: a worker killed mid-run, `hpcviz reduce`, the Prefect progress artifact."""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
import pyvista as pv
import xarray as xr

from prefect_hpcviz.cli.main import main as hpcviz
from prefect_hpcviz.viz.datasets import open_dataset
from prefect_hpcviz.viz.reduce import Recipe, ReducedDataset, reduce_dataset
from prefect_hpcviz.viz.reduce import kernels

RECIPE = Recipe.from_yaml("""
steps:
  - contour: {field: f, values: [0.6]}
  - slice: {normal: x}
  - coarsen: {factor: 2}
  - statistics: {bins: 10}
""")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A 2-step 80^3 float64 Zarr store in 20^3 chunks: 64 chunks per step."""
    path = tmp_path_factory.mktemp("zarr") / "run.zarr"
    n = 80
    axis = np.linspace(-1, 1, n)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    f = np.sqrt(x**2 + y**2 + z**2) + 0.05 * np.sin(7 * x)
    xr.Dataset({"f": (("time", "z", "y", "x"), np.stack([f, f * 1.1]))},
               coords={"time": [0.0, 1.0], "z": axis, "y": axis, "x": axis}
               ).to_zarr(path, encoding={"f": {"chunks": (1, 20, 20, 20)}})
    return path


def check_against_whole(data: ReducedDataset, store: Path) -> None:
    """The reduced files equal the recipe done whole with VTK/NumPy."""
    dataset = open_dataset(store)
    for position, step in enumerate(range(dataset.n_steps)):
        whole = dataset.read(step)
        coarse = kernels.coarsen(whole, 2)["f"]
        np.testing.assert_array_equal(pv.read(data.volume_files[position])["f"], coarse)
        surface = pv.read(data.layer("contour_f").files[position])
        assert surface.area == pytest.approx(kernels.contour(whole, "f", [0.6]).area, rel=1e-3)
        counts, _ = np.histogram(coarse, bins=10, range=(coarse.min(), coarse.max()))
        assert data.manifest["statistics"][position]["fields"][0]["histogram"]["counts"] == counts.tolist()


def test_a_worker_killed_mid_reduction_leaves_a_complete_result_or_none_and_a_rerun_finishes(store, tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "out"
    quarter = threading.Event()
    outcome: dict = {}

    def progress(done: int, total: int) -> None:
        if done >= total // 4:
            quarter.set()

    def run(client) -> None:
        try:
            outcome["data"] = reduce_dataset(store, RECIPE, out, client=client, chunk_bytes=20**3 * 8,
                                             progress=progress)
        except Exception as error:  # noqa: BLE001 - either outcome is allowed; checked below
            outcome["error"] = error

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        runner = threading.Thread(target=run, args=(client,))
        runner.start()
        assert quarter.wait(timeout=120), "the reduction never got a quarter through"
        assert runner.is_alive()  # killed mid-run, not after
        victim = psutil.Process(next(iter(pids.values())))
        victim.kill()
        runner.join(timeout=300)
        assert not runner.is_alive()
        assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE

        entries = sorted(p.name for p in out.iterdir())
        assert not [e for e in entries if e.startswith(".tmp")], entries  # no half-written output
        if "data" in outcome:  # Dask reran the lost tasks: the result is complete
            assert entries == [outcome["data"].path.name]
            check_against_whole(ReducedDataset.load(outcome["data"].path), store)
        else:
            assert entries == []

        again = reduce_dataset(store, RECIPE, out, client=client, chunk_bytes=20**3 * 8)
    assert again.cached == ("data" in outcome)
    check_against_whole(again, store)


def test_hpcviz_reduce_prints_bytes_time_and_peak_memory_per_worker(store, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.to_yaml())
    code = hpcviz(["reduce", str(store), "--recipe", str(recipe), "--out", str(tmp_path / "out"),
                   "--workers", "2", "--chunk-mb", "0.1", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert re.search(r"bytes:\s+[\d.]+ [KM]B in, [\d.]+ [KM]B out", printed)
    assert re.search(r"time:\s+[\d.]+ s reducing", printed)
    line = re.search(r"peak memory per worker: (.+)", printed)
    assert line, printed
    peaks = re.findall(r"([\d.]+) ([MG])B", line.group(1))
    megabytes = [float(v) * (1000 if unit == "G" else 1) for v, unit in peaks]
    assert len(megabytes) == 2 and all(50 < mb < 4000 for mb in megabytes), printed
    path = Path(re.search(r"out:\s+(\S+)", printed).group(1))
    check_against_whole(ReducedDataset.load(path), store)


def test_hpcviz_reduce_names_a_bad_recipe_step_and_exits_2(store, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps: [{contour: {field: nope, values: [1]}}]")
    code = hpcviz(["reduce", str(store), "--recipe", str(recipe), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert code == 2
    assert "step 1 (contour): 'field' 'nope' is not in the dataset; available fields: f" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_the_prefect_task_publishes_a_progress_artifact_that_moves_while_it_runs(prefect_harness, store, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    from prefect_hpcviz.blocks.clusters import LocalDaskCluster
    from prefect_hpcviz.tasks import progress as progress_module
    from prefect_hpcviz.tasks.reduce import reduce_dataset as reduce_task

    seen: list[float] = []

    class Watched(progress_module.ReductionProgress):
        """Reads the artifact back from the Prefect API after each update."""

        def __init__(self, source: str) -> None:
            super().__init__(source, min_interval=0.0)

        def __call__(self, done: int, total: int) -> None:
            super().__call__(done, total)
            with get_client(sync_client=True) as client:
                artifact = client.read_artifacts(
                    artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
                seen.append(float(next(a for a in artifact if a.id == self.artifact_id).data))

    @flow
    def reduce_flow():
        return reduce_task(str(store), RECIPE.to_dict(), out_dir=str(tmp_path / "out"),
                           cluster=LocalDaskCluster(n_workers=1, processes=False))

    original = progress_module.ReductionProgress
    import prefect_hpcviz.tasks.reduce as task_module

    task_module.ReductionProgress = Watched
    try:
        reduced = reduce_flow()
    finally:
        task_module.ReductionProgress = original
    assert seen[0] == 0.0 and seen[-1] == 100.0
    assert any(0.0 < p < 100.0 for p in seen)
    assert seen == sorted(seen)
    check_against_whole(reduced, store)


def test_hpcviz_reduce_runs_on_a_running_scheduler_given_by_address(store, tmp_path, capsys):
    from distributed import LocalCluster

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps: [{coarsen: {factor: 4}}]")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        code = hpcviz(["reduce", str(store), "--recipe", str(recipe), "--out", str(tmp_path / "out"),
                       "--scheduler", cluster.scheduler_address, "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert re.search(r"peak memory per worker: [\d.]+ [MG]B$", printed, re.M)  # one worker
    path = Path(re.search(r"out:\s+(\S+)", printed).group(1))
    whole = open_dataset(store).read(1)
    np.testing.assert_array_equal(pv.read(ReducedDataset.load(path).volume_files[1])["f"], kernels.coarsen(whole, 4)["f"])
