"""Chunk-by-chunk reduction of uniform grids, compared with the same operation done whole
by VTK/NumPy on data that fits in memory (isosurface area and volume, seams, statistics)."""

from __future__ import annotations

import json
import math

import dask
import dask.array as da
import numpy as np
import pytest
import pyvista as pv
import xarray as xr

from prefect_hpcviz.viz.datasets import open_dataset
from prefect_hpcviz.viz.datasets.volume import ChunkedVolume
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.reduce import Recipe, ReducedDataset, reduce_dataset
from prefect_hpcviz.viz.reduce import kernels
from prefect_hpcviz.viz.reduce import chunked_contour
from prefect_hpcviz.viz.reduce.chunked_contour import contour_pieces, contour_volume, merge_pieces, seam_planes
from prefect_hpcviz.viz.reduce.chunked_ops import coarsen_volume, crop_volume, slice_volumes
from prefect_hpcviz.viz.reduce.layer_steps import clip, decimate
from prefect_hpcviz.viz.reduce.result import layer_pieces, read_layer
from prefect_hpcviz.viz.reduce.statistics import field_statistics

SHAPE = (61, 70, 83)  # z, y, x: no axis a multiple of the chunk size
CHUNKS = (16, 24, 20)
ORIGIN = (-1.0, 0.5, 2.0)
SPACING = (0.05, 0.04, 0.03)


def field() -> np.ndarray:
    """Two nested closed shells and a surface cut by the domain walls, float32."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij")
    r = np.sqrt((x - 40.3) ** 2 + (y - 33.7) ** 2 + (z - 29.9) ** 2)
    return (r / 12.0 + 0.15 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.float32)


@pytest.fixture(scope="module")
def values() -> np.ndarray:
    return field()


@pytest.fixture(scope="module")
def volume(values) -> ChunkedVolume:
    return ChunkedVolume("f", da.from_array(values, chunks=CHUNKS), ORIGIN, SPACING)


@pytest.fixture(scope="module")
def whole(volume) -> pv.ImageData:
    return volume.to_image()


def compute(delayed):
    return dask.compute(delayed, scheduler="sync")[0]


def closed_volume(surface: pv.PolyData) -> float:
    return abs(surface.volume)


def boundary_edges(surface: pv.PolyData) -> int:
    return surface.extract_feature_edges(boundary_edges=True, feature_edges=False, manifold_edges=False,
                                         non_manifold_edges=False).n_cells


def duplicate_points(surface: pv.PolyData) -> int:
    return surface.n_points - len(np.unique(np.asarray(surface.points), axis=0))


@pytest.mark.parametrize("isovalues", [[2.0], [1.0, 2.5]])
def test_chunked_contour_equals_whole_volume_flying_edges_with_watertight_seams(volume, whole, isovalues):
    merged = compute(contour_volume(volume, isovalues))
    reference = kernels.contour(whole, "f", isovalues)

    assert reference.n_cells > 1000
    assert merged.n_cells == reference.n_cells and merged.n_points == reference.n_points
    assert merged.area == pytest.approx(reference.area, rel=1e-3)
    assert closed_volume(merged) == pytest.approx(closed_volume(reference), rel=1e-3)
    assert duplicate_points(merged) == 0
    assert boundary_edges(merged) == boundary_edges(reference)
    np.testing.assert_allclose(np.sort(merged["f"]), np.sort(reference["f"]), rtol=1e-6)


def test_a_closed_isosurface_across_many_chunks_has_no_boundary_edge(volume, whole):
    merged = compute(contour_volume(volume, [1.5]))  # a shell well inside the domain, cut by 3x3x3 chunks
    assert boundary_edges(kernels.contour(whole, "f", [1.5])) == 0
    assert boundary_edges(merged) == 0 and duplicate_points(merged) == 0
    assert merged.is_manifold


def test_isosurface_pieces_merged_on_their_shared_planes_equal_the_whole_volume_contour(volume, whole):
    pieces = dask.compute(*contour_pieces(volume, [1.0, 2.5], piece_bytes=4 * 16 * 24 * 20 * 4), scheduler="sync")
    reference = kernels.contour(whole, "f", [1.0, 2.5])
    assert len(pieces) > 2 and all(duplicate_points(p) == 0 for p in pieces)  # seams inside a piece are merged
    assert sum(p.n_cells for p in pieces) == reference.n_cells
    appended = pv.merge(list(pieces), merge_points=False)
    assert appended.n_points > reference.n_points  # points on planes shared by two pieces are in both

    merged = merge_pieces(pieces, seam_planes(volume), volume.origin, volume.spacing)
    assert merged.n_cells == reference.n_cells and merged.n_points == reference.n_points
    assert duplicate_points(merged) == 0 and boundary_edges(merged) == boundary_edges(reference)
    assert merged.area == pytest.approx(reference.area, rel=1e-3)
    assert closed_volume(merged) == pytest.approx(closed_volume(reference), rel=1e-3)
    cleaned = appended.clean(tolerance=0.0, absolute=True)  # what vtkCleanPolyData makes of the pieces
    assert cleaned.n_points == reference.n_points and boundary_edges(cleaned) == boundary_edges(reference)


def test_chunked_isosurfaces_carry_the_other_fields_and_normals_like_the_whole_volume_contour(values, volume):
    """Other fields are interpolated onto the surface exactly as a whole-volume contour does (their
    chunks differ and are aligned first); normals come from the field's gradient, one-sided on the
    planes between chunks, so there they differ by a few degrees from central differences."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    other = (np.sin(x / 9.0) + np.cos(y / 11.0) * z / 30.0).astype(np.float32)
    carried = {"g": ChunkedVolume("g", da.from_array(other, chunks=(20, 20, 20)), ORIGIN, SPACING)}
    whole = volume.to_image()
    whole.point_data["g"] = other.reshape(-1)
    isovalues = [-10.0, 1.0, 2.5]  # the first makes no triangle anywhere: VTK then used to drop "g"
    reference = kernels.contour(whole, "f", isovalues)
    merged = compute(contour_volume(volume, isovalues, carried))

    assert set(reference.point_data) == set(merged.point_data) == {"f", "g", "Normals"}
    assert merged.point_data.active_normals_name == "Normals"
    mine, theirs = (np.lexsort(np.asarray(m.points).T[::-1]) for m in (merged, reference))
    np.testing.assert_array_equal(np.asarray(merged.points)[mine], np.asarray(reference.points)[theirs])
    np.testing.assert_array_equal(merged["g"][mine], reference["g"][theirs])
    cosine = np.sum(merged["Normals"][mine] * reference["Normals"][theirs], axis=1)
    degrees = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    assert np.mean(degrees < 1e-3) > 0.5 and degrees.max() < 6.0


def test_a_first_isovalue_outside_the_range_keeps_the_other_fields_on_a_whole_volume(whole):
    grid = whole.copy()
    grid.point_data["g"] = np.arange(grid.n_points, dtype=np.float32)
    surface = kernels.contour(grid, "f", [-10.0, 2.0])
    assert surface.n_cells and "g" in surface.point_data and "Normals" in surface.point_data


def test_an_isosurface_holds_a_few_chunks_at_a_time_not_the_volume():
    """A seam slab cut as a *view* of a chunk's face kept the whole chunk alive until the seam ran:
    at 1024^3 a worker held 3.8 GB of a 4 GiB volume. Every chunk is watched through a weak
    reference while a 125-chunk volume is contoured; only a few may be alive at any time."""
    import weakref

    from dask.callbacks import Callback

    chunks: list[weakref.ref] = []

    def sphere(_, block_info=None):
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        z, y, x = np.meshgrid(np.arange(z0, z1), np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
        block = (np.sqrt((x - 80.0) ** 2 + (y - 80.0) ** 2 + (z - 80.0) ** 2) / 40.0).astype(np.float32)
        chunks.append(weakref.ref(block))
        return block

    most_alive = 0

    class WatchChunks(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            nonlocal most_alive
            most_alive = max(most_alive, sum(ref() is not None for ref in chunks))

    data = da.empty((160, 160, 160), chunks=32, dtype=np.float32).map_blocks(sphere, dtype=np.float32)
    volume = ChunkedVolume("f", data, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with WatchChunks():
        pieces = dask.compute(*contour_pieces(volume, [1.0, 1.9]), scheduler="sync")
    assert len(chunks) == data.npartitions == 125  # each chunk made once
    assert sum(p.n_cells for p in pieces) > 10_000  # a real surface through most chunks
    assert most_alive <= 8, f"{most_alive} of {data.npartitions} chunks alive at once"


def test_a_big_isosurface_is_written_in_pieces_listed_by_a_pvtp_that_merges_watertight(
        dask_client, zarr_store, tmp_path, monkeypatch):
    monkeypatch.setattr(chunked_contour, "PIECE_BYTES", 3 * 40_000)  # a few chunks per piece
    recipe = Recipe.from_yaml("steps: [{contour: {field: f, values: [1.0, 2.5]}}, {slice: {normal: z}}]")
    data = reduce_dataset(zarr_store, recipe, tmp_path, client=dask_client, chunk_bytes=40_000)
    layer = data.layer("contour_f").files[0]
    pieces = layer_pieces(layer)
    assert layer.suffix == ".pvtp" and len(pieces) > 2 and all(p.suffix == ".vtp" for p in pieces)
    assert data.layer("slice_z").files[0].suffix == ".vtp"

    dataset = open_dataset(zarr_store)
    reference = kernels.contour(dataset.read(0), "f", [1.0, 2.5])
    surface = read_layer(layer)
    assert surface.n_cells == reference.n_cells and surface.area == pytest.approx(reference.area, rel=1e-3)
    assert surface.point_data.active_normals_name == "Normals"  # marked in the .pvtp: smooth shading
    volume = dataset.volume(0, "f", chunk_bytes=40_000)
    merged = merge_pieces([pv.read(p) for p in pieces], seam_planes(volume), volume.origin, volume.spacing)
    assert merged.n_points == reference.n_points and duplicate_points(merged) == 0
    assert boundary_edges(merged) == boundary_edges(reference)
    assert ReducedDataset.load(data.path).layer("contour_f").files[0] == layer
    assert data.bytes_out >= sum(p.stat().st_size for p in pieces)

    pieces[1].unlink()  # a lost piece makes the result incomplete, and says so
    with pytest.raises(InputError, match="missing"):
        ReducedDataset.load(data.path)


def test_crop_equals_numpy_slicing_of_the_whole_image(volume, whole):
    bounds = [0.0, 1.2, 1.0, 2.5, 2.1, 3.0]
    cropped = crop_volume(volume, bounds)
    reference = kernels.crop(whole, bounds)
    assert cropped.dimensions == reference.dimensions
    assert np.allclose(cropped.origin, reference.origin)
    np.testing.assert_array_equal(cropped.data.compute().reshape(-1), reference["f"])
    with pytest.raises(InputError, match="no data point lies inside"):
        crop_volume(volume, [50, 60, 50, 60, 50, 60])


@pytest.mark.parametrize("how", ["mean", "max"])
@pytest.mark.parametrize("factor", [(4, 4, 4), (3, 2, 5)])
def test_coarsen_equals_the_whole_image_block_reduction_exactly(volume, whole, how, factor):
    coarse = coarsen_volume(volume, factor, how)
    reference = kernels.coarsen(whole, factor, how)
    assert coarse.dimensions == reference.dimensions
    assert np.allclose(coarse.origin, reference.origin) and np.allclose(coarse.spacing, reference.spacing)
    np.testing.assert_array_equal(coarse.data.compute().reshape(-1), reference["f"])


def test_axis_aligned_slice_between_grid_planes_equals_vtk_slice(volume, whole):
    origin = (0.0, 1.9, 2.91)  # z between two point planes
    mine = compute(slice_volumes({"f": volume}, (0, 0, 1), origin))
    reference = kernels.slice_plane(whole, (0, 0, 1), origin)
    assert mine.area == pytest.approx(reference.area, rel=1e-9)
    assert mine.n_points == reference.n_points  # VTK cuts the z edges: one point per (x, y)
    ours, theirs = (np.lexsort(np.asarray(m.points)[:, :2].T) for m in (mine, reference))
    np.testing.assert_allclose(np.asarray(mine.points)[ours], np.asarray(reference.points)[theirs], atol=1e-6)
    np.testing.assert_allclose(mine["f"][ours], reference["f"][theirs], rtol=1e-6)


def test_oblique_slice_equals_vtk_slice_with_seams_merged(volume, whole):
    normal, origin = (1, 2, 0.5), (0.2, 1.9, 2.9)
    mine = compute(slice_volumes({"f": volume}, normal, origin))
    reference = kernels.slice_plane(whole, normal, origin)
    assert mine.area == pytest.approx(reference.area, rel=1e-6)
    assert mine.integrate_data()["f"][0] == pytest.approx(reference.integrate_data()["f"][0], rel=1e-6)
    # The same cut run on one chunk: points that coincide in float32 near grid
    # points are the algorithm's own; the seams add no duplicate and no crack.
    single = compute(slice_volumes({"f": ChunkedVolume("f", volume.data.rechunk(-1), ORIGIN, SPACING)},
                                   normal, origin))
    assert duplicate_points(mine) <= duplicate_points(single)
    assert boundary_edges(mine) <= boundary_edges(single)


def test_statistics_and_histogram_equal_numpy_on_the_whole_array(values):
    data = values.astype(np.float64)
    data[3, 4, 5] = np.nan
    blocks = [b.compute() for b in da.from_array(data, chunks=CHUNKS).to_delayed().ravel()]
    stats = field_statistics(blocks, bins=17)
    finite = data[np.isfinite(data)]
    counts, edges = np.histogram(finite, bins=17, range=(finite.min(), finite.max()))
    assert stats["count"] == finite.size and stats["nonfinite"] == 1
    assert (stats["min"], stats["max"]) == (finite.min(), finite.max())
    assert stats["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(finite.std(), rel=1e-10)
    assert stats["histogram"]["counts"] == counts.tolist()
    assert stats["histogram"]["edges"] == edges.tolist()


def test_decimate_reaches_the_target_and_keeps_the_shape_like_vtk_on_the_whole_surface(volume, whole):
    merged = compute(contour_volume(volume, [2.0]))
    target = merged.n_cells // 5
    mine = decimate(merged, target)
    reference = decimate(kernels.contour(whole, "f", [2.0]), target)
    assert abs(mine.n_cells - target) <= 0.02 * target
    assert abs(mine.n_cells - reference.n_cells) <= 0.02 * target
    assert mine.area == pytest.approx(reference.area, rel=0.02)


def test_clip_of_the_merged_surface_equals_clip_of_the_whole_surface(volume, whole):
    merged = compute(contour_volume(volume, [2.0]))
    mine = clip(merged, (1, 0, 0), (0.2, 0, 0))
    reference = clip(kernels.contour(whole, "f", [2.0]), (1, 0, 0), (0.2, 0, 0))
    assert mine.bounds[1] <= 0.2 + 1e-6 and mine.n_cells > 0
    assert mine.area == pytest.approx(reference.area, rel=1e-9)


# -- the whole engine on a Zarr store -----------------------------------------------------------


@pytest.fixture(scope="module")
def zarr_store(tmp_path_factory, values):
    """3 time steps of f (float64, so downcast has work) and a vector field, chunked on disk."""
    path = tmp_path_factory.mktemp("zarr") / "run.zarr"
    z, y, x = (np.asarray(ORIGIN[::-1][a]) + np.arange(n) * SPACING[::-1][a] for a, n in enumerate(SHAPE))
    steps = np.stack([values.astype(np.float64) + 0.25 * t for t in range(3)])
    xr.Dataset(
        {"f": (("time", "z", "y", "x"), steps), "g": (("time", "z", "y", "x"), -steps.astype(np.float32))},
        coords={"time": [0.0, 1.0, 2.0], "z": z, "y": y, "x": x},
    ).to_zarr(path, encoding={"f": {"chunks": (1, 16, 24, 20)}, "g": {"chunks": (1, 16, 24, 20)}})
    return path


FULL = """
fields: [f, g]
time: {stride: 2}
steps:
  - statistics: {bins: 8, fields: [f]}
  - contour: {field: f, values: [2.0]}
  - decimate: {triangles: 2000}
  - slice: {normal: z}
  - crop: {bounds: [-1, 1.3, 0.5, 3.0, 2.0, 3.0]}
  - downcast: {}
  - coarsen: {factor: 2, how: max}
  - statistics: {bins: 4, range: [0, 4]}
"""


def test_a_recipe_on_a_zarr_store_runs_chunk_by_chunk_and_matches_whole_numpy(dask_client, zarr_store, tmp_path):
    ticks = []
    data = reduce_dataset(zarr_store, Recipe.from_yaml(FULL), tmp_path, client=dask_client, chunk_bytes=40_000,
                          progress=lambda done, total: ticks.append((done, total)))
    dataset = open_dataset(zarr_store)
    assert data.time_values == [0.0, 2.0]
    assert ticks[0][0] == 0 and ticks[-1][0] == ticks[-1][1] > 20  # chunk writes reported one by one
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks)

    for position, step in enumerate([0, 2]):
        whole = dataset.read(step)
        volume = pv.read(data.volume_files[position])
        reference = kernels.coarsen(kernels.downcast(kernels.crop(whole, [-1, 1.3, 0.5, 3.0, 2.0, 3.0])), 2, "max")
        assert volume.dimensions == reference.dimensions and np.allclose(volume.origin, reference.origin)
        for name in ("f", "g"):
            assert volume[name].dtype == np.float32
            np.testing.assert_array_equal(volume[name], reference[name])
        contour = pv.read(data.layer("contour_f").files[position])
        assert abs(contour.n_cells - 2000) <= 40
        surface = kernels.contour(whole, "f", [2.0])
        assert decimate(surface, 2000).area == pytest.approx(contour.area, rel=0.02)
        slice_z = pv.read(data.layer("slice_z").files[position])
        assert slice_z.area == pytest.approx(kernels.slice_plane(whole, (0, 0, 1)).area, rel=1e-9)

        stats = data.manifest["statistics"][position]
        assert stats["step"] == step
        first, *last = stats["fields"]
        assert (first["recipe_step"], first["field"]) == (1, "f")
        values = np.asarray(whole["f"])
        counts, _ = np.histogram(values, bins=8, range=(values.min(), values.max()))
        assert first["histogram"]["counts"] == counts.tolist() and first["min"] == values.min()
        assert first["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert [(s["recipe_step"], s["field"]) for s in last] == [(8, "f"), (8, "g")]
        for record, name in zip(last, ("f", "g")):
            counts, _ = np.histogram(reference[name], bins=4, range=(0, 4))
            assert record["histogram"]["counts"] == counts.tolist()
            assert record["count"] == reference.n_points and record["max"] == reference[name].max()

    manifest = json.loads((data.path / "manifest.json").read_text())
    f_range = next(f for f in manifest["fields"] if f["name"] == "f")["range"]
    assert f_range[1] == pytest.approx(float(pv.read(data.volume_files[1])["f"].max()))
    assert ReducedDataset.load(data.path).bytes_out == data.bytes_out


def test_vtkhdf_output_with_compression_reads_back_equal(dask_client, zarr_store, tmp_path):
    recipe = Recipe.from_yaml("""
fields: [f]
time: {stride: 3}
output: {format: vtkhdf, compression: zlib, level: 4}
steps: [{coarsen: {factor: 3}}, {contour: {field: f, values: [2.0]}}]
""")
    data = reduce_dataset(zarr_store, recipe, tmp_path, client=dask_client, chunk_bytes=40_000)
    whole = open_dataset(zarr_store).read(0)
    volume = pv.read(data.volume_files[0])
    assert data.volume_files[0].suffix == ".vtkhdf" and data.layers[0].files[0].suffix == ".vtkhdf"
    coarse = kernels.coarsen(whole, 3)
    np.testing.assert_array_equal(volume["f"], coarse["f"])
    assert pv.read(data.layers[0].files[0]).area == pytest.approx(kernels.contour(coarse, "f", [2.0]).area, rel=1e-3)


@pytest.mark.parametrize("level", [0, 6])
def test_a_vtkhdf_volume_is_written_chunk_by_chunk_by_many_tasks_and_vtk_reads_it(dask_client, zarr_store,
                                                                                  tmp_path, level):
    """No task holds the reduced volume: each chunk (a crop makes them uneven, so they are regridded first)
    is deflated by its own task and put into the one file in turn."""
    recipe = Recipe.from_dict({"fields": ["f", "g"], "output": {"format": "vtkhdf", "compression": "zlib",
                                                                  "level": level} if level else {"format": "vtkhdf"},
                               "steps": [{"crop": {"bounds": [-0.9, 1.3, 0.6, 3.0, 2.1, 3.0]}}]})
    dataset = open_dataset(zarr_store)
    plan_volume = crop_volume(dataset.volume(0, "f", chunk_bytes=40_000), [-0.9, 1.3, 0.6, 3.0, 2.1, 3.0])
    assert len(set(plan_volume.data.chunks[0])) > 1  # uneven chunks: the first is cut by the crop
    data = reduce_dataset(zarr_store, recipe, tmp_path, client=dask_client, chunk_bytes=40_000)

    import h5py

    path = data.volume_files[0]
    with h5py.File(path) as f:
        stored = f["VTKHDF/PointData/f"]
        assert stored.chunks is not None and math.prod(stored.chunks) < stored.size  # many chunks, one file
        assert stored.compression == ("gzip" if level else None)
    volume = pv.read(path)  # VTK's own reader
    reference = kernels.crop(dataset.read(0), [-0.9, 1.3, 0.6, 3.0, 2.1, 3.0])
    assert volume.dimensions == reference.dimensions and np.allclose(volume.origin, reference.origin)
    np.testing.assert_array_equal(volume["f"], reference["f"])
    np.testing.assert_array_equal(volume["g"], reference["g"])
    assert not list(path.parent.glob(".*"))  # no lock or partial file left behind
    last = kernels.crop(dataset.read(2), [-0.9, 1.3, 0.6, 3.0, 2.1, 3.0])  # ranges span every kept step
    f_range = next(f for f in data.manifest["fields"] if f["name"] == "f")["range"]
    assert f_range == pytest.approx([float(reference["f"].min()), float(last["f"].max())])


def test_recipe_errors_for_the_new_steps_name_the_step_the_key_and_the_allowed_values():
    cases = {
        "steps: [{decimate: {triangles: 100}}]":
            "recipe step 1 (decimate): decimate changes the layer made by the step right before it",
        "steps: [{slice: {}}, {decimate: {triangles: 2}}]":
            "recipe step 2 (decimate): 'triangles' must be a whole number >= 4",
        "steps: [{downcast: {to: int8}}]": "recipe step 1 (downcast): 'to' must be float32",
        "steps: [{statistics: {range: [2, 1]}}]": "recipe step 1 (statistics): 'range' must be 2 finite numbers",
        "steps: [{slice: {}}, {clip: {normal: [0, 0, 0]}}]": "recipe step 2 (clip): 'normal' must be 3 numbers",
        "output: {format: vtkhdf, compression: lz4}": "recipe output: 'compression' 'lz4' is not available for vtkhdf",
        "output: {format: hdf}": "recipe: 'output.format' must be one of vtk-xml, vtkhdf",
    }
    for text, expected in cases.items():
        with pytest.raises(InputError) as caught:
            Recipe.from_yaml(text)
        assert expected in str(caught.value), text


def test_the_new_steps_on_a_mesh_run_whole_per_time_step_and_match_numpy(dask_client, tmp_path):
    image = pv.ImageData(dimensions=(30, 28, 26), spacing=(0.1, 0.1, 0.1))
    image["f"] = np.linalg.norm(image.points - 1.3, axis=1).astype(np.float64)
    mesh_path = tmp_path / "mesh.vtu"
    image.cast_to_unstructured_grid().save(mesh_path)
    recipe = Recipe.from_yaml("""
steps:
  - downcast: {}
  - statistics: {bins: 5}
  - contour: {field: f, values: [0.8]}
  - clip: {normal: x, origin: [1.3, 0, 0]}
  - decimate: {triangles: 300}
""")
    data = reduce_dataset(mesh_path, recipe, tmp_path / "out", client=dask_client)
    assert pv.read(data.volume_files[0])["f"].dtype == np.float32
    values = image["f"].astype(np.float32)
    stats = data.manifest["statistics"][0]["fields"][0]
    counts, _ = np.histogram(values, bins=5, range=(values.min(), values.max()))
    assert stats["histogram"]["counts"] == counts.tolist() and stats["count"] == values.size
    layer = pv.read(data.layers[0].files[0])
    half = clip(kernels.contour(kernels.downcast(image), "f", [0.8]), (1, 0, 0), (1.3, 0, 0))
    assert layer.bounds[1] <= 1.3 + 1e-3 and abs(layer.n_cells - 300) <= 15  # decimation moves points a little
    assert layer.area == pytest.approx(half.area, rel=0.03)


def test_a_volume_summary_is_reduced_chunk_by_chunk_and_equals_the_whole_step_ranges(zarr_store, tmp_path,
                                                                                     monkeypatch):
    from prefect_hpcviz.viz.datasets.base import Dataset, array_range

    dataset = open_dataset(zarr_store)
    expected = {}
    for step in range(dataset.n_steps):  # the reference: every step read whole, as before
        mesh = dataset.read(step)
        for name in ("f", "g"):
            lo, hi = array_range(mesh.GetPointData().GetArray(name))
            old = expected.get(name, (np.inf, -np.inf))
            expected[name] = (min(old[0], lo), max(old[1], hi))

    def whole_read(self, *args, **kwargs):
        raise AssertionError("a uniform grid's summary must not read a whole step")

    monkeypatch.setattr(Dataset, "read", whole_read)
    fresh = open_dataset(zarr_store)
    summary = fresh.summary()
    assert [f.name for f in summary.fields] == ["f", "g"]
    for found in summary.fields:
        assert found.range == pytest.approx(expected[found.name], rel=1e-6)
    assert summary.kind == "ImageData" and summary.dimensions == SHAPE[::-1]
    assert summary.time_values == [0.0, 1.0, 2.0]
    headers = open_dataset(zarr_store).summary(ranges=False)
    assert all(np.isnan(f.range).all() for f in headers.fields)
    assert (headers.bounds, headers.n_points) == (summary.bounds, summary.n_points)
