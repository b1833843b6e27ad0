"""Opening simulation output: VTK XML files and .pvd series, NetCDF and Zarr,
local paths and fsspec URLs. Every file here is written by the real writers
(VTK's, through pyvista, and xarray's) and read back through the public API."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import pyvista as pv
import xarray as xr

from prefect_hpcviz.viz.datasets import (
    SUPPORTED_FORMATS,
    Dataset,
    DatasetSummary,
    open_dataset,
    summarize,
)
from prefect_hpcviz.viz.errors import InputError

TIMES = [0.0, 0.25, 1.5]


def image_volume(step: int = 0) -> pv.ImageData:
    """A small uniform grid with a scalar, a vector and a cell field that change with ``step``."""
    grid = pv.ImageData(dimensions=(9, 8, 7), spacing=(0.5, 0.25, 2.0), origin=(-1.0, 2.0, 3.0))
    rng = np.random.default_rng(step)
    grid.point_data["pressure"] = rng.normal(step, 1.0, grid.n_points).astype(np.float32)
    grid.point_data["velocity"] = rng.normal(0, step + 1.0, (grid.n_points, 3)).astype(np.float32)
    grid.cell_data["rank"] = np.arange(grid.n_cells, dtype=np.int32) + step
    return grid


def write_series(folder: Path, *, subdir: str = "steps") -> tuple[Path, list[pv.ImageData]]:
    """A .pvd listing three .vti files in a subfolder, entries deliberately out of time order."""
    (folder / subdir).mkdir(parents=True, exist_ok=True)
    grids = []
    rows = []
    for step, t in enumerate(TIMES):
        grid = image_volume(step)
        grid.save(folder / subdir / f"state_{step}.vti")
        grids.append(grid)
        rows.append(f'<DataSet timestep="{t}" group="" part="0" file="{subdir}/state_{step}.vti"/>')
    pvd = folder / "run.pvd"
    pvd.write_text('<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n<Collection>\n'
                   + "\n".join(reversed(rows)) + "\n</Collection>\n</VTKFile>\n")
    return pvd, grids


def volume_xarray(times=(0.0, 10.0, 20.0)) -> xr.Dataset:
    """Two 3-D variables on uniform (z, y, x) coordinates with a leading time dimension."""
    rng = np.random.default_rng(7)
    shape = (len(times), 4, 5, 6)
    return xr.Dataset(
        {
            "temperature": (("time", "z", "y", "x"), rng.normal(280, 5, shape).astype(np.float32)),
            "salinity": (("time", "z", "y", "x"), rng.normal(35, 1, shape)),
            "label": (("time",), np.arange(len(times))),  # not 3-D: ignored
        },
        coords={
            "time": list(times),
            "z": np.arange(4) * 10.0 - 30.0,
            "y": np.arange(5) * 0.5,
            "x": np.arange(6) * 0.25 + 100.0,
        },
    )


def as_volume_values(grid: pv.ImageData, name: str) -> np.ndarray:
    """Point field of an ImageData as a (z, y, x) numpy array (VTK is x-fastest)."""
    nx, ny, nz = grid.dimensions
    return np.asarray(grid.point_data[name]).reshape(nz, ny, nx)


# -- VTK XML single files ------------------------------------------------------


def test_a_vti_file_reads_back_the_grid_and_values_that_were_written(tmp_path):
    written = image_volume(3)
    written.save(tmp_path / "volume.vti")

    ds = open_dataset(tmp_path / "volume.vti")
    grid = ds.read()

    assert isinstance(ds, Dataset)
    assert (ds.format, ds.time_values, ds.n_steps) == ("vti", [0.0], 1)
    assert ds.source == str((tmp_path / "volume.vti").resolve())
    assert isinstance(grid, pv.ImageData)
    assert grid.dimensions == (9, 8, 7)
    assert grid.spacing == pytest.approx((0.5, 0.25, 2.0))
    assert grid.origin == pytest.approx((-1.0, 2.0, 3.0))
    np.testing.assert_array_equal(grid.point_data["pressure"], written.point_data["pressure"])
    np.testing.assert_array_equal(grid.point_data["velocity"], written.point_data["velocity"])
    np.testing.assert_array_equal(grid.cell_data["rank"], written.cell_data["rank"])
    assert ds.field_names() == ["pressure", "velocity", "rank"]
    assert ds.nbytes == (tmp_path / "volume.vti").stat().st_size


@pytest.mark.parametrize(
    ("extension", "kind", "convert"),
    [
        ("vtu", "UnstructuredGrid", lambda g: g.cast_to_unstructured_grid()),
        ("vtp", "PolyData", lambda g: g.extract_surface(algorithm="dataset_surface")),
        ("vts", "StructuredGrid", lambda g: g.cast_to_structured_grid()),
    ],
)
def test_vtu_vtp_and_vts_files_read_back_points_cells_and_fields(tmp_path, extension, kind, convert):
    mesh = convert(image_volume(1))
    path = tmp_path / f"mesh.{extension}"
    mesh.save(path)

    ds = open_dataset(str(path))
    read = ds.read(0)

    assert ds.format == extension
    assert type(read).__name__ == kind
    assert (read.n_points, read.n_cells) == (mesh.n_points, mesh.n_cells)
    np.testing.assert_array_equal(read.points, mesh.points)
    for name in mesh.point_data.keys():
        np.testing.assert_array_equal(read.point_data[name], mesh.point_data[name])
    summary = ds.summary()
    assert summary.kind == kind
    assert summary.bounds == pytest.approx(mesh.bounds)
    assert summary.dimensions == (mesh.dimensions if kind == "StructuredGrid" else None)


def test_reading_only_some_fields_leaves_the_others_out(tmp_path):
    image_volume(0).save(tmp_path / "volume.vti")

    grid = open_dataset(tmp_path / "volume.vti").read(fields=["pressure"])

    assert "pressure" in grid.point_data
    assert "velocity" not in grid.point_data
    assert "rank" not in grid.cell_data


def test_a_file_url_reads_the_same_as_the_local_path(tmp_path):
    image_volume(2).save(tmp_path / "volume.vti")

    by_url = open_dataset((tmp_path / "volume.vti").as_uri())
    by_path = open_dataset(tmp_path / "volume.vti")

    assert by_url.source == by_path.source
    assert by_url.fingerprint() == by_path.fingerprint()
    np.testing.assert_array_equal(by_url.read().point_data["pressure"], by_path.read().point_data["pressure"])


# -- .pvd series -----------------------------------------------------------------


def test_a_pvd_series_takes_time_values_from_timestep_attributes_and_files_relative_to_it(tmp_path, monkeypatch):
    pvd, grids = write_series(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # relative to the .pvd, not to the working directory

    ds = open_dataset(pvd)

    assert ds.format == "pvd"
    assert ds.time_values == TIMES  # sorted, although listed in reverse
    for step, grid in enumerate(grids):
        read = ds.read(step)
        np.testing.assert_array_equal(read.point_data["pressure"], grid.point_data["pressure"])
        np.testing.assert_array_equal(read.cell_data["rank"], grid.cell_data["rank"])


def test_the_summary_gives_ranges_over_all_time_steps_bounds_dimensions_and_bytes(tmp_path):
    pvd, grids = write_series(tmp_path)

    summary = summarize(pvd)

    pressure = np.concatenate([g.point_data["pressure"] for g in grids])
    speed = np.concatenate([np.linalg.norm(g.point_data["velocity"].astype(np.float64), axis=1) for g in grids])
    rank = np.concatenate([g.cell_data["rank"] for g in grids])
    assert summary.field("pressure").range == (float(pressure.min()), float(pressure.max()))
    assert summary.field("velocity").range == pytest.approx((speed.min(), speed.max()), rel=1e-6)
    assert summary.field("rank").range == (float(rank.min()), float(rank.max()))
    assert [(f.name, f.association, f.components, f.dtype) for f in summary.fields] == [
        ("pressure", "point", 1, "float32"),
        ("velocity", "point", 3, "float32"),
        ("rank", "cell", 1, "int32"),
    ]
    assert (summary.kind, summary.format) == ("ImageData", "pvd")
    assert summary.dimensions == (9, 8, 7)
    assert summary.bounds == pytest.approx(grids[0].bounds)
    assert (summary.n_points, summary.n_cells) == (grids[0].n_points, grids[0].n_cells)
    assert summary.time_values == TIMES
    files = [pvd, *sorted((tmp_path / "steps").iterdir())]
    assert summary.nbytes == sum(f.stat().st_size for f in files)


def test_a_summary_survives_a_round_trip_through_json(tmp_path):
    pvd, _ = write_series(tmp_path)
    summary = summarize(pvd)

    again = DatasetSummary.from_dict(json.loads(json.dumps(summary.to_dict())))

    assert again == summary


def test_the_fingerprint_is_stable_and_changes_when_a_file_is_touched_or_rewritten(tmp_path):
    pvd, _ = write_series(tmp_path)
    ds = open_dataset(pvd)
    first = ds.fingerprint()

    assert ds.fingerprint() == first == open_dataset(pvd).fingerprint()
    piece = tmp_path / "steps" / "state_1.vti"
    stat = piece.stat()
    os.utime(piece, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = ds.fingerprint()
    assert touched != first
    image_volume(9).save(piece)
    assert ds.fingerprint() not in (first, touched)
    assert ds.summary().field("pressure").range[1] > 5  # the summary follows the new data


def test_several_parts_at_one_time_step_are_merged(tmp_path):
    left, right = image_volume(0), image_volume(1)
    right.origin = (10.0, 2.0, 3.0)
    left.save(tmp_path / "left.vti")
    right.save(tmp_path / "right.vti")
    (tmp_path / "parts.pvd").write_text(
        '<VTKFile type="Collection"><Collection>'
        '<DataSet timestep="0" part="0" file="left.vti"/><DataSet timestep="0" part="1" file="right.vti"/>'
        "</Collection></VTKFile>")

    merged = open_dataset(tmp_path / "parts.pvd").read(0)

    assert merged.n_points == left.n_points + right.n_points
    assert merged.bounds[1] == pytest.approx(right.bounds[1])


# -- NetCDF and Zarr through xarray ---------------------------------------------


def test_netcdf_variables_become_point_fields_of_a_uniform_grid_with_time_steps(tmp_path):
    data = volume_xarray()
    data.to_netcdf(tmp_path / "ocean.nc", engine="netcdf4")

    ds = open_dataset(tmp_path / "ocean.nc")
    grid = ds.read(2)

    assert ds.format == "netcdf"
    assert ds.time_values == [0.0, 10.0, 20.0]
    assert ds.field_names() == ["temperature", "salinity"]
    assert isinstance(grid, pv.ImageData)
    assert grid.dimensions == (6, 5, 4)
    assert grid.origin == pytest.approx((100.0, 0.0, -30.0))
    assert grid.spacing == pytest.approx((0.25, 0.5, 10.0))
    np.testing.assert_array_equal(as_volume_values(grid, "temperature"), data["temperature"].values[2])
    np.testing.assert_array_equal(as_volume_values(grid, "salinity"), data["salinity"].values[2])
    assert grid.point_data["salinity"].dtype == np.float64
    summary = ds.summary()
    assert summary.field("temperature").range == (
        float(data["temperature"].min()), float(data["temperature"].max()))
    assert summary.nbytes == (tmp_path / "ocean.nc").stat().st_size


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_stores_v2_and_v3_open_like_netcdf(tmp_path, zarr_format):
    data = volume_xarray()
    store = tmp_path / "run.zarr"
    data.to_zarr(store, zarr_format=zarr_format, consolidated=zarr_format == 2)

    ds = open_dataset(store)
    grid = ds.read(1)

    assert ds.format == "zarr"
    assert ds.time_values == [0.0, 10.0, 20.0]
    np.testing.assert_array_equal(as_volume_values(grid, "temperature"), data["temperature"].values[1])
    assert ds.nbytes == sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    before = ds.fingerprint()
    chunk = next(f for f in sorted(store.rglob("*")) if f.is_file() and "temperature" in f.parts)
    os.utime(chunk, ns=(chunk.stat().st_atime_ns, chunk.stat().st_mtime_ns + 10**9))
    assert ds.fingerprint() != before


def test_a_zarr_directory_without_the_zarr_extension_is_recognized(tmp_path):
    volume_xarray().to_zarr(tmp_path / "output", zarr_format=3, consolidated=False)

    assert open_dataset(tmp_path / "output").format == "zarr"


def test_x_y_z_named_dimensions_are_put_in_order_and_descending_axes_flipped(tmp_path):
    values = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)  # stored as (x, y, z)
    data = xr.Dataset({"density": (("x", "y", "z"), values)},
                      coords={"x": [0.0, 1.0, 2.0], "y": [3.0, 2.0, 1.0, 0.0], "z": np.arange(5) * 0.5})
    data.to_netcdf(tmp_path / "density.nc", engine="netcdf4")

    grid = open_dataset(tmp_path / "density.nc").read()

    assert grid.dimensions == (3, 4, 5)
    assert grid.origin == pytest.approx((0.0, 0.0, 0.0))
    assert grid.spacing == pytest.approx((1.0, 1.0, 0.5))
    # the point at x=2, y=0 (last stored y), z=1.0 (index 2)
    point = grid.find_closest_point((2.0, 0.0, 1.0))
    assert grid.point_data["density"][point] == values[2, 3, 2]
    assert open_dataset(tmp_path / "density.nc").time_values == [0.0]


def test_unevenly_spaced_coordinates_are_refused_with_the_coordinate_named(tmp_path):
    data = volume_xarray()
    data = data.assign_coords(x=[0.0, 1.0, 2.0, 4.0, 8.0, 16.0])
    data.to_netcdf(tmp_path / "stretched.nc", engine="netcdf4")

    with pytest.raises(InputError, match=r"stretched\.nc.*'x' is not uniformly spaced"):
        open_dataset(tmp_path / "stretched.nc")


# -- fsspec URLs -------------------------------------------------------------------


@pytest.fixture
def memory_bucket(tmp_path, monkeypatch):
    """A unique folder on fsspec's in-memory file system, and a private download cache."""
    monkeypatch.setenv("HPCVIZ_CACHE_DIR", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    root = f"/bucket-{uuid.uuid4().hex[:8]}"
    yield fs, root
    fs.rm(root, recursive=True)


def test_a_pvd_series_behind_an_fsspec_url_is_read_through_a_local_cache(tmp_path, memory_bucket):
    fs, root = memory_bucket
    pvd, grids = write_series(tmp_path / "local")
    fs.put(str(tmp_path / "local"), root, recursive=True)

    ds = open_dataset(f"memory://{root}/run.pvd")

    assert ds.time_values == TIMES
    np.testing.assert_array_equal(ds.read(2).point_data["pressure"], grids[2].point_data["pressure"])
    cached = sorted(f.name for f in (tmp_path / "cache").rglob("*.vti"))
    assert cached == ["state_0.vti", "state_2.vti"]  # step 0's header at open, step 2 read: nothing else
    assert not list((tmp_path / "cache").rglob("*.part"))
    assert ds.nbytes == sum(f.stat().st_size for f in (tmp_path / "local").rglob("*") if f.is_file())
    before = ds.fingerprint()
    fs.pipe(f"{root}/steps/state_2.vti", (tmp_path / "local" / "steps" / "state_0.vti").read_bytes())
    assert ds.fingerprint() != before
    np.testing.assert_array_equal(ds.read(2).point_data["pressure"], grids[0].point_data["pressure"])


def test_a_zarr_store_behind_an_fsspec_url_is_read_through_xarray(memory_bucket):
    fs, root = memory_bucket
    data = volume_xarray()
    data.to_zarr(f"memory://{root}/run.zarr", zarr_format=3, consolidated=False)

    ds = open_dataset(f"memory://{root}/run.zarr")

    assert ds.format == "zarr"
    np.testing.assert_array_equal(as_volume_values(ds.read(0), "salinity"), data["salinity"].values[0])
    assert ds.nbytes == sum(info["size"] for info in fs.find(root, detail=True).values())


# -- bad input ---------------------------------------------------------------------


def test_a_missing_path_says_no_such_file_and_to_check_the_path(tmp_path):
    with pytest.raises(InputError) as error:
        open_dataset(tmp_path / "nowhere" / "run.pvd")

    assert str(error.value) == f"{tmp_path / 'nowhere' / 'run.pvd'}: no such file or directory. Check the path."


def test_a_truncated_vti_is_refused_with_the_file_named(tmp_path):
    image_volume(0).save(tmp_path / "volume.vti")
    whole = (tmp_path / "volume.vti").read_bytes()
    (tmp_path / "cut.vti").write_bytes(whole[: len(whole) // 2])

    with pytest.raises(InputError, match=r"cut\.vti: truncated or not a VTK XML file.*Re-export it"):
        open_dataset(tmp_path / "cut.vti")


def test_a_vti_with_appended_data_missing_in_the_middle_is_refused(tmp_path):
    grid = image_volume(0)
    grid.save(tmp_path / "volume.vti")  # pyvista writes inline binary: write appended raw with VTK itself
    from vtkmodules.vtkIOXML import vtkXMLImageDataWriter

    writer = vtkXMLImageDataWriter()
    writer.SetFileName(str(tmp_path / "appended.vti"))
    writer.SetInputData(grid)
    writer.SetDataModeToAppended()
    writer.EncodeAppendedDataOff()
    writer.SetCompressorTypeToNone()
    assert writer.Write() == 1
    whole = (tmp_path / "appended.vti").read_bytes()
    start = whole.index(b'encoding="raw"')
    (tmp_path / "holed.vti").write_bytes(whole[: start + 200] + whole[start + 1200:])  # tail intact

    np.testing.assert_array_equal(open_dataset(tmp_path / "appended.vti").read().point_data["pressure"],
                                  grid.point_data["pressure"])
    with pytest.raises(InputError, match=r"holed\.vti: truncated or not a VTK XML file"):
        open_dataset(tmp_path / "holed.vti").read()


def test_a_garbage_file_with_a_vti_extension_is_refused_with_the_file_named(tmp_path):
    (tmp_path / "noise.vti").write_bytes(bytes(range(256)) * 16)

    with pytest.raises(InputError, match=r"noise\.vti: truncated or not a VTK XML file"):
        open_dataset(tmp_path / "noise.vti")


def test_a_vtu_file_holding_image_data_is_refused(tmp_path):
    image_volume(0).save(tmp_path / "volume.vti")
    shutil.copy(tmp_path / "volume.vti", tmp_path / "mislabelled.vtu")

    with pytest.raises(InputError, match=r"mislabelled\.vtu: .*UnstructuredGrid"):
        open_dataset(tmp_path / "mislabelled.vtu")


def test_a_pvd_that_lists_a_missing_file_names_that_file(tmp_path):
    pvd, _ = write_series(tmp_path)
    (tmp_path / "steps" / "state_1.vti").unlink()

    with pytest.raises(InputError) as error:
        open_dataset(pvd)

    assert "state_1.vti: no such file or directory" in str(error.value)
    assert "run.pvd" in str(error.value)


def test_a_truncated_pvd_is_refused_with_the_file_named(tmp_path):
    pvd, _ = write_series(tmp_path)
    pvd.write_text(pvd.read_text()[:90])

    with pytest.raises(InputError, match=r"run\.pvd: truncated or not a \.pvd \(XML\) file"):
        open_dataset(pvd)


def test_an_unknown_extension_is_refused_with_the_supported_formats_listed(tmp_path):
    (tmp_path / "results.xyz").write_text("1 2 3\n")

    with pytest.raises(InputError) as error:
        open_dataset(tmp_path / "results.xyz")

    message = str(error.value)
    assert "results.xyz: unknown format '.xyz'" in message
    assert all(ext in message for ext in SUPPORTED_FORMATS)


def test_an_unknown_field_is_refused_with_the_available_fields_listed(tmp_path):
    pvd, _ = write_series(tmp_path)
    ds = open_dataset(pvd)

    with pytest.raises(InputError, match=r"run\.pvd: no field named 'temp' \(available fields: pressure, "
                                         r"velocity, rank\)"):
        ds.read(0, fields=["temp"])
    with pytest.raises(InputError, match=r"run\.pvd: no field named 'temp'"):
        ds.summary().field("temp")


def test_a_time_step_out_of_range_is_refused_with_the_valid_range(tmp_path):
    pvd, _ = write_series(tmp_path)

    with pytest.raises(InputError, match=r"run\.pvd: time step 3 is out of range.*between 0 and 2"):
        open_dataset(pvd).read(3)


def test_a_netcdf_file_that_is_not_netcdf_is_refused(tmp_path):
    (tmp_path / "broken.nc").write_bytes(b"this is not netcdf" * 10)

    with pytest.raises(InputError, match=r"broken\.nc: truncated or not a NetCDF file"):
        open_dataset(tmp_path / "broken.nc")


def test_a_dataset_travels_to_another_process_by_pickle(tmp_path):
    import pickle

    pvd, grids = write_series(tmp_path)
    ds = open_dataset(pvd)
    ds.summary()

    copy = pickle.loads(pickle.dumps(ds))

    assert copy.fingerprint() == ds.fingerprint()
    np.testing.assert_array_equal(copy.read(1).point_data["pressure"], grids[1].point_data["pressure"])
