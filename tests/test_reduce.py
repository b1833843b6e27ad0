"""reduce_dataset on a real dask.distributed LocalCluster: layout, manifest, caching,
atomic output, errors that leave nothing behind, inputs never touched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import pyvista as pv

from prefect_hpcviz.viz.datasets import open_dataset, write_synthetic
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.reduce import (
    ENGINE_VERSION,
    Recipe,
    ReducedDataset,
    cache_key,
    is_reduced_dir,
    reduce_dataset,
)
from prefect_hpcviz.viz.reduce.kernels import coarsen, crop

RECIPE = Recipe.from_yaml("""
steps:
  - crop: {bounds: [-1, 1, -1, 1, -1, 0.5]}
  - coarsen: {factor: 2, how: mean}
  - contour: {field: pressure, values: [0.3, 0.6]}
  - slice: {normal: [0, 0, 1]}
""")


@pytest.fixture(scope="module")
def client():
    """A real scheduler and worker in this process (threads): fast, and enough where pickling does not matter."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster) as running:
            yield running


@pytest.fixture(scope="module")
def simulation(tmp_path_factory) -> Path:
    """A 32^3 x 4-step synthetic simulation (.pvd of .vti), shared by the module; never written to."""
    return write_synthetic(tmp_path_factory.mktemp("sim"), shape=(32, 32, 32), steps=4)


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def leftovers(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []


def copy_simulation(simulation: Path, target: Path) -> Path:
    shutil.copytree(simulation.parent, target)
    return target / simulation.name


def test_reduce_writes_the_volume_and_one_layer_per_geometry_step_for_each_time_step(client, simulation, tmp_path):
    before = file_hashes(simulation.parent)
    data = reduce_dataset(simulation, RECIPE, tmp_path, client=client)
    dataset = open_dataset(simulation)

    assert data.path == tmp_path / cache_key(dataset, RECIPE) and len(data.path.name) == 16
    assert not data.cached and data.seconds > 0
    assert data.time_values == [0.0, 0.5, 1.0, 1.5]
    assert [p.name for p in data.volume_files] == [f"volume_{i:06d}.vti" for i in range(4)]
    assert [(x.name, x.kind) for x in data.layers] == [("contour_pressure", "contour"), ("slice_z", "slice")]
    assert [p.name for p in data.layers[1].files] == [f"slice_z_{i:06d}.vtp" for i in range(4)]
    assert sorted(p.name for p in data.path.iterdir()) == sorted(
        ["manifest.json", "volume.pvd", "contour_pressure.pvd", "slice_z.pvd"]
        + [p.name for p in data.volume_files] + [p.name for x in data.layers for p in x.files]
    )

    manifest = json.loads((data.path / "manifest.json").read_text())
    assert manifest["format"] == "hpcviz-reduced/1" and manifest["engine_version"] == ENGINE_VERSION
    assert manifest["key"] == data.path.name and manifest["source"] == dataset.source
    assert Recipe.from_dict(manifest["recipe"]) == RECIPE
    assert manifest["volume"]["series"] == "volume.pvd" and manifest["volume"]["dimensions"] == [16, 16, 12]
    assert {"name", "kind", "files", "series"} <= set(manifest["layers"][0])
    assert manifest["created"]

    # each volume file is exactly the kernels applied to that time step
    for step, path in enumerate(data.volume_files):
        expected = coarsen(crop(dataset.read(step), [-1, 1, -1, 1, -1, 0.5]), 2)
        written = pv.read(path)
        assert written.dimensions == expected.dimensions
        assert np.allclose(written.origin, expected.origin) and np.allclose(written.spacing, expected.spacing)
        assert np.array_equal(written["pressure"], expected["pressure"])
        assert np.array_equal(written["velocity"], expected["velocity"])

    # ranges over all kept steps of the reduced volume; bytes in = the input files, bytes out = files written
    volumes = [pv.read(p) for p in data.volume_files]
    pressure = next(f for f in data.fields if f.name == "pressure")
    assert pressure.range == (min(v["pressure"].min() for v in volumes), max(v["pressure"].max() for v in volumes))
    assert data.bytes_in == sum(p.stat().st_size for p in simulation.parent.glob("simulation_*.vti"))
    assert data.bytes_out == sum(p.stat().st_size for p in data.path.iterdir() if p.name != "manifest.json")
    assert data.bytes_out < data.bytes_in

    # ParaView (and pyvista) open the series with its time values
    reader = pv.get_reader(str(data.path / "contour_pressure.pvd"))
    assert reader.time_values == data.time_values
    reader.set_active_time_value(1.0)
    surface = reader.read()[0]
    assert surface.n_points > 0 and np.allclose(np.unique(surface["pressure"]), [0.3, 0.6])

    assert file_hashes(simulation.parent) == before
    assert leftovers(tmp_path) == [data.path.name]


def test_time_stride_and_field_selection_keep_only_what_the_recipe_asks_for(client, simulation, tmp_path):
    recipe = Recipe.from_yaml("fields: [pressure]\ntime: {stride: 2}\nsteps: [{coarsen: {factor: 4}}]")
    data = reduce_dataset(simulation, recipe, tmp_path, client=client)
    assert data.time_values == [0.0, 1.0]
    assert data.manifest["input_steps"] == [0, 2]
    assert [f.name for f in data.fields] == ["pressure"]
    assert pv.read(data.volume_files[1]).array_names == ["pressure"]
    assert data.layers == []
    step_files = sorted(simulation.parent.glob("simulation_*.vti"))
    assert data.bytes_in == step_files[0].stat().st_size + step_files[2].stat().st_size


def test_a_second_run_returns_the_cached_result_without_doing_any_work(client, simulation, tmp_path):
    first = reduce_dataset(simulation, RECIPE, tmp_path, client=client)
    stat = first.path.stat()
    files = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    again = reduce_dataset(str(simulation), Recipe.from_yaml(RECIPE.to_yaml()), tmp_path, client=client)
    assert again.cached and again.path == first.path
    assert again.manifest == first.manifest
    assert (first.path.stat().st_ino, first.path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()} == files
    assert leftovers(tmp_path) == [first.path.name]


def test_a_changed_recipe_or_a_changed_input_gets_a_new_key(client, simulation, tmp_path):
    sim = copy_simulation(simulation, tmp_path / "sim")
    out = tmp_path / "out"
    first = reduce_dataset(sim, RECIPE, out, client=client)
    other = Recipe.from_yaml(RECIPE.to_yaml().replace("0.3", "0.4"))
    second = reduce_dataset(sim, other, out, client=client)
    assert second.path != first.path and not second.cached
    step = sim.parent / "simulation_000003.vti"
    os.utime(step, ns=(step.stat().st_atime_ns, step.stat().st_mtime_ns + 10**9))
    third = reduce_dataset(sim, RECIPE, out, client=client)
    assert third.path not in (first.path, second.path) and not third.cached


def test_an_unknown_field_fails_before_any_work(client, simulation, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="unknown field 'temperature'; available fields: pressure, velocity"):
        reduce_dataset(simulation, Recipe.from_yaml("fields: [temperature]"), out, client=client)
    with pytest.raises(InputError, match="'velocity' is a vector field"):
        reduce_dataset(
            simulation, Recipe.from_yaml("steps: [{contour: {field: velocity, values: [1]}}]"), out, client=client
        )
    assert not out.exists()


def write_series(folder: Path, steps: list[pv.ImageData]) -> Path:
    folder.mkdir()
    entries = []
    for i, grid in enumerate(steps):
        grid.save(folder / f"step_{i}.vti")
        entries.append(f'<DataSet timestep="{i}" part="0" file="step_{i}.vti"/>')
    pvd = folder / "series.pvd"
    pvd.write_text(
        '<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n<Collection>\n'
        + "\n".join(entries) + "\n</Collection>\n</VTKFile>\n"
    )
    return pvd


def grid_step(with_temperature: bool) -> pv.ImageData:
    grid = pv.ImageData(dimensions=(12, 12, 12), spacing=(0.1, 0.1, 0.1))
    grid["pressure"] = np.linspace(0, 1, grid.n_points, dtype=np.float32)
    if with_temperature:
        grid["temperature"] = np.full(grid.n_points, 300.0, dtype=np.float32)
    return grid


def test_a_field_missing_from_a_later_step_fails_and_leaves_nothing_behind(client, tmp_path):
    pvd = write_series(tmp_path / "sim", [grid_step(True), grid_step(True), grid_step(False), grid_step(True)])
    before = file_hashes(pvd.parent)
    out = tmp_path / "out"
    recipe = Recipe.from_yaml("fields: [pressure, temperature]\nsteps: [{slice: {}}]")
    with pytest.raises(InputError, match=r"step_2.vti: has no point field 'temperature', which the first time step of series.pvd has \(this is time step 2; it has: pressure\)"):
        reduce_dataset(pvd, recipe, out, client=client)
    assert leftovers(out) == []
    assert file_hashes(pvd.parent) == before


def test_an_unreadable_file_in_the_middle_of_a_series_fails_and_leaves_nothing_behind(client, simulation, tmp_path):
    sim = copy_simulation(simulation, tmp_path / "sim")
    broken = sim.parent / "simulation_000002.vti"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    before = file_hashes(sim.parent)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="simulation_000002.vti"):
        reduce_dataset(sim, RECIPE, out, client=client)
    assert leftovers(out) == []
    assert file_hashes(sim.parent) == before


def test_two_runs_racing_for_the_same_result_both_get_one_complete_copy(client, simulation, tmp_path):
    results: list[ReducedDataset] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(reduce_dataset(simulation, RECIPE, tmp_path, client=client))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 2 and results[0].path == results[1].path
    assert results[0].manifest == results[1].manifest
    assert leftovers(tmp_path) == [results[0].path.name]  # the loser's temp dir is gone


def test_a_non_image_mesh_is_cropped_contoured_and_sliced(client, tmp_path):
    grid = pv.ImageData(dimensions=(16, 16, 16), spacing=(0.1, 0.1, 0.1))
    grid["d"] = np.linalg.norm(grid.points - 0.75, axis=1).astype(np.float32)
    source = tmp_path / "mesh.vtu"
    grid.cast_to_unstructured_grid().save(source)
    recipe = Recipe.from_yaml("""
steps:
  - crop: {bounds: [0, 1, 0, 1, 0, 1]}
  - contour: {field: d, values: [0.5], name: shell}
  - slice: {normal: x}
""")
    data = reduce_dataset(source, recipe, tmp_path / "out", client=client)
    assert data.volume_files[0].suffix == ".vtu"
    assert [x.name for x in data.layers] == ["shell", "slice_x"]
    volume = pv.read(data.volume_files[0])
    assert np.allclose(volume.bounds, (0, 1, 0, 1, 0, 1))
    assert pv.read(data.layers[0].files[0]).n_points > 0


def test_load_refuses_a_directory_that_is_not_a_reduced_dataset(client, simulation, tmp_path):
    assert not is_reduced_dir(tmp_path)
    with pytest.raises(InputError, match="not a reduced dataset"):
        ReducedDataset.load(tmp_path)
    data = reduce_dataset(simulation, Recipe.from_yaml("steps: [{slice: {}}]"), tmp_path, client=client)
    assert is_reduced_dir(data.path)
    loaded = ReducedDataset.load(data.path)
    assert loaded.layers == data.layers and loaded.fields == data.fields and not loaded.cached


def test_a_foreign_directory_in_the_place_of_the_result_is_never_overwritten(client, simulation, tmp_path):
    recipe = Recipe.from_yaml("steps: [{slice: {}}]")
    squatter = tmp_path / cache_key(open_dataset(simulation), recipe)
    squatter.mkdir()
    (squatter / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="exists but is not a reduced dataset"):
        reduce_dataset(simulation, recipe, tmp_path, client=client)
    assert leftovers(tmp_path) == [squatter.name] and leftovers(squatter) == ["notes.txt"]


def test_the_graph_has_one_task_per_kept_time_step_and_runs_on_any_dask_scheduler(simulation, tmp_path):
    import dask

    from prefect_hpcviz.viz.reduce import build_graph
    from prefect_hpcviz.viz.reduce.worker_tasks import ReducePlan, layer_names

    recipe = Recipe.from_yaml("time: {stride: 2}\nsteps: [{coarsen: {factor: 4}}, {slice: {}}]")
    plan = ReducePlan(open_dataset(simulation), recipe, (0, 2), tuple(layer_names(recipe)), str(tmp_path))
    graph = build_graph(plan)
    names = sorted(str(key).rsplit("-", 1)[0] for key in dict(graph.__dask_graph__()))
    assert names == ["hpcviz-reduce-plan", "hpcviz-reduce-series", "hpcviz-reduce-step-0", "hpcviz-reduce-step-1"]
    (body,) = dask.compute(graph, scheduler="synchronous")
    assert body["time_values"] == [0.0, 1.0] and body["layers"][0]["name"] == "slice_z"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "slice_z.pvd", "slice_z_000000.vtp", "slice_z_000001.vtp",
        "volume.pvd", "volume_000000.vti", "volume_000001.vti",
    ]


def test_reduce_on_worker_processes_with_the_default_recipe(dask_client, simulation, tmp_path):
    """Workers in other processes: the plan, the tasks and their errors travel by pickle."""
    data = reduce_dataset(simulation, None, tmp_path, client=dask_client)
    assert [s.kind for s in Recipe.from_dict(data.manifest["recipe"]).steps] == ["contour", "slice"]
    assert [x.kind for x in data.layers] == ["contour", "slice"]
    assert len(data.volume_files) == 4 and all(p.is_file() for p in data.volume_files)

    pvd = write_series(tmp_path / "sim", [grid_step(True), grid_step(False)])
    recipe = Recipe.from_yaml("fields: [temperature]")
    with pytest.raises(InputError, match="step_1.vti: has no point field 'temperature'"):
        reduce_dataset(pvd, recipe, tmp_path / "out", client=dask_client)
    assert leftovers(tmp_path / "out") == []


def test_without_a_client_reduce_starts_and_stops_its_own_local_cluster(simulation, tmp_path):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    recipe = Recipe.from_yaml("time: {stride: 3}\nsteps: [{coarsen: {factor: 4}}]")
    data = reduce_dataset(simulation, recipe, tmp_path)
    assert data.time_values == [0.0, 1.5] and not data.cached
    assert pv.read(data.volume_files[1]).dimensions == (8, 8, 8)
    # its worker processes are gone once it returns (allow a moment for the OS to reap them)
    deadline = time.monotonic() + 10
    while {p.pid for p in me.children(recursive=True) if p.is_running()} - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {p.pid for p in me.children(recursive=True) if p.is_running()} - before == set()


def test_a_file_vtk_cannot_write_raises_with_vtks_reason(tmp_path):
    from prefect_hpcviz.viz.reduce.vtk_xml import write_vtk_xml

    (tmp_path / "taken.vtp").mkdir()
    with pytest.raises(OSError, match='Error opening output file .*taken.vtp"; Error code "Is a directory"'):
        write_vtk_xml(pv.Sphere(), tmp_path / "taken")
    assert write_vtk_xml(pv.Sphere(), tmp_path / "ok") == tmp_path / "ok.vtp"
    assert pv.read(tmp_path / "ok.vtp").n_points == pv.Sphere().n_points
