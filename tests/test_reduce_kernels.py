"""The reduce kernels give what the same operation gives done whole in VTK or NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import pyvista as pv
import vtk

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.reduce.kernels import coarsen, contour, crop, select_fields, slice_plane


def lattice(grid: pv.ImageData, name: str) -> np.ndarray:
    """A point array as a (z, y, x, components) array, the way VTK orders it."""
    nx, ny, nz = grid.dimensions
    return np.asarray(grid.point_data[name]).reshape(nz, ny, nx, -1)


@pytest.fixture
def grid() -> pv.ImageData:
    """13 x 10 x 7 points (not multiples of the factors used), a scalar and a vector field."""
    image = pv.ImageData(dimensions=(13, 10, 7), spacing=(0.5, 0.25, 1.0), origin=(1.0, 2.0, 3.0))
    rng = np.random.default_rng(0)
    image.point_data["pressure"] = rng.random(image.n_points).astype(np.float32)
    image.point_data["velocity"] = rng.normal(size=(image.n_points, 3)).astype(np.float32)
    image.cell_data["rank"] = np.arange(image.n_cells, dtype=np.int32)
    return image


@pytest.fixture
def blob() -> pv.ImageData:
    """A smooth field whose isosurfaces are closed, slightly wavy spheres."""
    image = pv.ImageData(dimensions=(40, 40, 40), spacing=(0.05,) * 3, origin=(-1.0, -1.0, -1.0))
    points = image.points
    image["d"] = (np.linalg.norm(points - [0.1, 0.05, 0.0], axis=1) + 0.1 * np.sin(5 * points[:, 0])).astype(
        np.float32
    )
    image["velocity"] = points.astype(np.float32)
    return image


def test_select_fields_keeps_only_the_named_arrays_and_leaves_the_input_alone(grid):
    picked = select_fields(grid, ["pressure"])
    assert picked.array_names == ["pressure"]
    assert sorted(grid.array_names) == ["pressure", "rank", "velocity"]
    assert sorted(select_fields(grid, None).array_names) == ["pressure", "rank", "velocity"]


def test_crop_of_image_data_equals_numpy_slicing_and_vtk_extract_voi(grid):
    # x points at 1.0, 1.5, ... 7.0; y at 2.0 ... 4.25; z at 3 ... 9.
    # The box edges fall on points (inclusive) and between points.
    out = crop(grid, [2.0, 4.2, 2.25, 3.0, 3.5, 9.0])
    assert isinstance(out, pv.ImageData)
    assert out.dimensions == (5, 4, 6)  # x 2.0..4.0, y 2.25..3.0, z 4..9
    assert out.spacing == grid.spacing
    assert np.allclose(out.origin, (2.0, 2.25, 4.0))
    expected = lattice(grid, "pressure")[1:7, 1:5, 2:7]
    assert np.array_equal(lattice(out, "pressure"), expected)
    assert np.array_equal(lattice(out, "velocity"), lattice(grid, "velocity")[1:7, 1:5, 2:7])

    voi = vtk.vtkExtractVOI()
    voi.SetInputData(grid)
    voi.SetVOI(2, 6, 1, 4, 1, 6)
    voi.Update()
    reference = pv.wrap(voi.GetOutput())
    assert np.allclose(out.points, reference.points)
    assert np.array_equal(out["pressure"], reference["pressure"])
    assert np.array_equal(out.cell_data["rank"], reference.cell_data["rank"])


def test_crop_that_holds_no_grid_point_is_an_input_error(grid):
    with pytest.raises(InputError, match="no data point lies inside"):
        crop(grid, [1.1, 1.4, 2.0, 3.0, 3.0, 9.0])  # between x = 1.0 and 1.5


def test_crop_of_an_unstructured_grid_equals_clip_box(blob):
    mesh = blob.cast_to_unstructured_grid()
    bounds = [-0.5, 0.5, -0.3, 0.4, -0.2, 0.6]
    out = crop(mesh, bounds)
    reference = mesh.clip_box(bounds, invert=False)
    assert out.n_points == reference.n_points and out.n_cells == reference.n_cells
    assert np.allclose(out.bounds, bounds)
    assert np.array_equal(out["d"], reference["d"])


def block_reduce_by_loops(values: np.ndarray, factors, reduction) -> np.ndarray:
    """The reference: every whole block taken one at a time (partial blocks trimmed)."""
    nz, ny, nx, comps = values.shape
    fx, fy, fz = factors
    out = np.empty((nz // fz, ny // fy, nx // fx, comps), dtype=values.dtype)
    for k in range(nz // fz):
        for j in range(ny // fy):
            for i in range(nx // fx):
                block = values[k * fz:(k + 1) * fz, j * fy:(j + 1) * fy, i * fx:(i + 1) * fx]
                flat = block.reshape(-1, comps)
                out[k, j, i] = (
                    flat.mean(axis=0, dtype=np.float64) if reduction == "mean" else flat.max(axis=0)
                )
    return out


@pytest.mark.parametrize("how", ["mean", "max"])
def test_coarsen_equals_a_block_reduction_done_block_by_block(grid, how):
    out = coarsen(grid, (4, 3, 2), how)
    assert out.dimensions == (3, 3, 3)  # 13 // 4, 10 // 3, 7 // 2: partial blocks trimmed
    assert out.spacing == (2.0, 0.75, 2.0)
    # each point sits at the centre of its block
    assert np.allclose(out.origin, (1.0 + 1.5 * 0.5, 2.0 + 1.0 * 0.25, 3.0 + 0.5 * 1.0))
    for name in ("pressure", "velocity"):
        expected = block_reduce_by_loops(lattice(grid, name), (4, 3, 2), how)
        assert np.array_equal(lattice(out, name), expected), name
        assert out[name].dtype == np.float32
    assert out["pressure"].ndim == 1 and out["velocity"].shape == (27, 3)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_coarsen_values_equal_vtk_image_shrink_3d(grid, how):
    grid.set_active_scalars("pressure")
    shrink = vtk.vtkImageShrink3D()
    shrink.SetInputData(grid)
    shrink.SetShrinkFactors(4, 3, 2)
    shrink.MeanOn() if how == "mean" else shrink.MaximumOn()
    shrink.Update()
    reference = pv.wrap(shrink.GetOutput())
    out = coarsen(grid, (4, 3, 2), how)
    assert reference.dimensions == out.dimensions
    assert np.array_equal(out["pressure"], reference["ImageScalars"])
    # VTK puts each value at its block's first point; we put it at the block centre
    assert np.allclose(np.asarray(out.origin) - reference.origin, (0.75, 0.25, 0.5))


def test_coarsen_by_more_than_an_axis_length_reduces_that_axis_to_one_point():
    flat = pv.ImageData(dimensions=(8, 8, 1))
    flat["p"] = np.arange(64.0)
    out = coarsen(flat, 4)
    assert out.dimensions == (2, 2, 1)
    assert out["p"][0] == np.arange(64.0).reshape(8, 8)[:4, :4].mean()


def test_coarsen_turns_cell_fields_into_point_fields(grid):
    out = coarsen(grid, 2)
    assert "rank" in out.point_data.keys() and not out.cell_data.keys()


def test_coarsen_of_a_structured_grid_averages_the_points_too(blob):
    curvy = blob.cast_to_structured_grid()
    out = coarsen(curvy, 4)
    reference = coarsen(blob, 4)
    assert out.dimensions == reference.dimensions
    assert np.allclose(out.points, reference.points)
    assert np.allclose(out["d"], reference["d"])


def test_coarsen_of_an_unstructured_mesh_is_an_input_error(blob):
    with pytest.raises(InputError, match="needs ImageData or StructuredGrid"):
        coarsen(blob.cast_to_unstructured_grid(), 2)


def test_contour_of_image_data_equals_vtk_flying_edges_run_whole(blob):
    out = contour(blob, "d", [0.5, 0.7])
    reference = vtk.vtkFlyingEdges3D()
    reference.SetInputData(blob)
    reference.SetInputArrayToProcess(0, 0, 0, 0, "d")
    reference.SetNumberOfContours(2)
    reference.SetValue(0, 0.5)
    reference.SetValue(1, 0.7)
    reference.Update()
    whole = pv.wrap(reference.GetOutput())
    assert isinstance(out, pv.PolyData)
    assert out.n_points == whole.n_points and out.n_cells == whole.n_cells
    assert out.area == pytest.approx(whole.area, rel=1e-12)
    # the scalar is kept (the iso value at each point) and other fields are interpolated
    assert np.allclose(np.unique(out["d"]), [0.5, 0.7])
    assert out["velocity"].shape == (out.n_points, 3)
    # and the same surface as pyvista's general contour filter
    general = blob.contour([0.5, 0.7], scalars="d", method="contour")
    assert out.n_points == general.n_points
    assert out.area == pytest.approx(general.area, rel=1e-6)


def test_contour_of_an_unstructured_grid_matches_the_image_contour(blob):
    out = contour(blob.cast_to_unstructured_grid(), "d", [0.5])
    assert out.n_points == contour(blob, "d", [0.5]).n_points
    assert out.area == pytest.approx(contour(blob, "d", [0.5]).area, rel=1e-6)


def test_contour_of_a_cell_field_interpolates_it_to_the_points(blob):
    cells = blob.point_data_to_cell_data(pass_point_data=False)
    out = contour(cells, "d", [0.5])
    reference = cells.cell_data_to_point_data().contour([0.5], scalars="d")
    assert out.n_points == reference.n_points > 0


def test_contour_of_a_missing_field_names_the_fields_there_are(blob):
    with pytest.raises(InputError, match=r"not in this time step \(fields: d, velocity\)"):
        contour(blob, "temperature", [1.0])


def test_slice_through_grid_points_equals_that_numpy_plane(grid):
    # z = 3 + 2 * 1.0 is the third layer of points
    out = slice_plane(grid, [0, 0, 1], [0, 0, 5.0])
    plane = lattice(grid, "pressure")[2].reshape(-1)
    order = np.lexsort((out.points[:, 0], out.points[:, 1]))
    assert out.n_points == 13 * 10
    assert np.allclose(out.points[:, 2], 5.0)
    assert np.allclose(out["pressure"][order], plane)


def test_slice_equals_pyvista_slice_and_defaults_to_the_centre(blob):
    out = slice_plane(blob, [1, 1, 0])
    reference = blob.slice(normal=[1, 1, 0], origin=blob.center)
    assert out.n_points == reference.n_points > 0
    assert np.allclose(out.points, reference.points)
    assert np.allclose(out["d"], reference["d"])
