"""The synthetic simulation the demo runs on: a .pvd of raw-appended .vti files
that VTK reads back exactly, that changes from step to step, and that is
written once per set of parameters."""

from __future__ import annotations

import re

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkIOXML import vtkXMLImageDataReader

from prefect_hpcviz.viz.datasets import open_dataset, write_synthetic
from prefect_hpcviz.viz.errors import InputError

SHAPE = (24, 20, 16)


def raw_appended_arrays(path) -> dict[str, np.ndarray]:
    """Decode a raw-appended .vti with numpy alone (UInt64 size headers, little endian)."""
    data = path.read_bytes()
    start = data.index(b"_", data.index(b'<AppendedData encoding="raw">')) + 1
    arrays = {}
    for match in re.finditer(rb'Name="(\w+)"(?: NumberOfComponents="(\d)")? format="appended" offset="(\d+)"',
                             data[:start]):
        offset = start + int(match.group(3))
        size = int(np.frombuffer(data, "<u8", 1, offset)[0])
        values = np.frombuffer(data, "<f4", size // 4, offset + 8)
        arrays[match.group(1).decode()] = values.reshape(-1, int(match.group(2) or 1)).squeeze()
    return arrays


def test_vtk_reads_back_exactly_the_arrays_that_were_written(tmp_path):
    pvd = write_synthetic(tmp_path, shape=SHAPE, steps=3, seed=1)

    assert pvd == tmp_path / "simulation.pvd"
    for step in range(3):
        path = tmp_path / f"simulation_{step:06d}.vti"
        reader = vtkXMLImageDataReader()
        reader.SetFileName(str(path))
        reader.Update()
        image = reader.GetOutput()
        written = raw_appended_arrays(path)
        assert image.GetDimensions() == SHAPE
        assert image.GetBounds() == pytest.approx((-1, 1, -1, 1, -1, 1))
        for name, components in (("pressure", 1), ("velocity", 3)):
            array = image.GetPointData().GetArray(name)
            assert array.GetNumberOfComponents() == components
            assert array.GetDataTypeAsString() == "float"
            np.testing.assert_array_equal(vtk_to_numpy(array), written[name])
        assert written["pressure"].shape == (np.prod(SHAPE),)


def test_every_step_differs_and_the_series_has_its_time_values(tmp_path):
    ds = open_dataset(write_synthetic(tmp_path, shape=SHAPE, steps=3))
    steps = [ds.read(k) for k in range(3)]

    assert ds.time_values == [0.0, 0.5, 1.0]
    for field in ("pressure", "velocity"):
        for a, b in ((0, 1), (1, 2), (0, 2)):
            assert not np.allclose(steps[a][field], steps[b][field], atol=1e-3), (field, a, b)
    # the blobs move: the isosurface at mid-range sits elsewhere at each step
    low, high = ds.summary().field("pressure").range
    centres = [np.array(s.contour([0.5 * (low + high)], scalars="pressure").center) for s in steps]
    assert min(np.linalg.norm(centres[a] - centres[b]) for a, b in ((0, 1), (1, 2))) > 0.02
    assert np.isfinite(steps[0]["pressure"]).all() and np.isfinite(steps[0]["velocity"]).all()


def test_a_second_call_with_the_same_parameters_rewrites_nothing(tmp_path):
    pvd = write_synthetic(tmp_path, shape=SHAPE, steps=3)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    assert write_synthetic(tmp_path, shape=SHAPE, steps=3) == pvd
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_other_parameters_rewrite_the_series_and_drop_steps_no_longer_listed(tmp_path):
    write_synthetic(tmp_path, shape=SHAPE, steps=3, seed=0)
    first = open_dataset(tmp_path / "simulation.pvd").read(0)["pressure"].copy()

    write_synthetic(tmp_path, shape=SHAPE, steps=2, seed=5)

    ds = open_dataset(tmp_path / "simulation.pvd")
    assert ds.time_values == [0.0, 0.5]
    assert sorted(p.name for p in tmp_path.glob("*.vti")) == ["simulation_000000.vti", "simulation_000001.vti"]
    assert not np.array_equal(ds.read(0)["pressure"], first)


def test_a_damaged_step_is_written_again(tmp_path):
    write_synthetic(tmp_path, shape=SHAPE, steps=2)
    step = tmp_path / "simulation_000001.vti"
    whole = step.read_bytes()
    step.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"simulation_000001\.vti: truncated"):
        open_dataset(tmp_path / "simulation.pvd").read(1)

    write_synthetic(tmp_path, shape=SHAPE, steps=2)

    assert step.read_bytes() == whole


@pytest.mark.parametrize(("kwargs", "input_name"), [
    ({"shape": (1, 4, 4)}, "shape"),
    ({"shape": (4, 4)}, "shape"),
    ({"steps": 0}, "steps"),
])
def test_bad_parameters_are_refused(tmp_path, kwargs, input_name):
    with pytest.raises(InputError, match=rf"^{input_name}: "):
        write_synthetic(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())
