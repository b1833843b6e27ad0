"""Volume steps and slices on chunked volumes: lazy dask graphs, one chunk at a time.

Each function takes a :class:`~..datasets.volume.ChunkedVolume` and returns a
new one (crop, coarsen, downcast) or a ``dask.delayed`` result (slices). They
compute exactly what :mod:`.kernels` computes on a whole ``pyvista.ImageData``
(the tests compare both), but never hold more than the chunks in flight.

Example:
    >>> vol = ChunkedVolume("p", da.ones((8, 8, 8), chunks=4), (0, 0, 0), (1, 1, 1))
    >>> coarsen_volume(vol, (2, 2, 2), "mean").dimensions
    (4, 4, 4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da  # noqa: F401 (doctest)
import numpy as np
import pyvista as pv

from ..datasets.volume import ChunkedVolume
from . import kernels
from .chunked_contour import cell_boxes, contour_block, merge_pieces, seam_planes


def crop_volume(volume: ChunkedVolume, bounds: Sequence[float]) -> ChunkedVolume:
    """The grid points inside ``[xmin, xmax, ymin, ymax, zmin, zmax]`` (inclusive), like :func:`kernels.crop`.

    Raises:
        InputError: no grid point lies inside the box.
    """
    dims = volume.dimensions
    ranges = [kernels._index_range(float(bounds[2 * a]), float(bounds[2 * a + 1]), volume.origin[a],
                                   volume.spacing[a], dims[a]) for a in range(3)]
    if any(i1 <= i0 for i0, i1 in ranges):
        raise kernels._empty_crop_error(bounds, volume.bounds)
    (x0, x1), (y0, y1), (z0, z1) = ranges
    origin = tuple(o + i * s for o, i, s in zip(volume.origin, (x0, y0, z0), volume.spacing))
    return ChunkedVolume(volume.name, volume.data[z0:z1, y0:y1, x0:x1], origin, volume.spacing)


def _reduce_block(block: np.ndarray, factors_zyx: tuple[int, int, int], how: str) -> np.ndarray:
    """Block mean/max of one chunk; points past the last whole block (only in the last chunk) are trimmed."""
    block = block[tuple(slice(0, n // f * f) for n, f in zip(block.shape[:3], factors_zyx))]
    lattice = block if block.ndim == 4 else block[..., np.newaxis]
    out = kernels._block_reduce(lattice, factors_zyx, how)
    if how == "mean" and np.issubdtype(block.dtype, np.floating):
        out = out.astype(block.dtype)
    return out if block.ndim == 4 else out[..., 0]


def _whole_blocks(n: int, size: int, factor: int) -> tuple[int, ...]:
    """Chunk sizes along an axis of ``n`` points: multiples of ``factor``, the leftover kept in the last one."""
    size = max(factor, size // factor * factor)
    chunks = [size] * (n // size)
    rest = n - sum(chunks)
    if rest >= factor or not chunks:
        chunks.append(rest)
    else:
        chunks[-1] += rest  # a leftover shorter than a block is trimmed with its chunk
    return tuple(c for c in chunks if c)


def coarsen_volume(volume: ChunkedVolume, factor: Sequence[int], how: str = "mean") -> ChunkedVolume:
    """Block mean or max over ``factor`` = (fx, fy, fz) points, trimming leftovers, like :func:`kernels.coarsen`.

    Chunks are first made whole multiples of the factor (a no-op when the
    storage chunks already are), then each chunk is reduced on its own.
    """
    dims = volume.dimensions
    eff = tuple(max(1, min(int(f), d)) for f, d in zip(factor, dims))
    new_dims = tuple(d // f for f, d in zip(eff, dims))
    zyx = (eff[2], eff[1], eff[0])
    data = volume.data
    chunks = tuple(_whole_blocks(n, size, f) for n, size, f in zip(data.shape[:3], data.chunksize[:3], zyx))
    if chunks != data.chunks[:3]:
        data = data.rechunk(chunks + data.chunks[3:])
    out_dtype = np.float64 if how == "mean" and not np.issubdtype(data.dtype, np.floating) else data.dtype
    out_chunks = tuple(tuple(c // f for c in axis) for axis, f in zip(data.chunks[:3], zyx))
    reduced = data.map_blocks(_reduce_block, zyx, how, dtype=out_dtype, chunks=out_chunks + data.chunks[3:])
    assert reduced.shape[:3] == new_dims[::-1]
    spacing = np.asarray(volume.spacing) * np.asarray(eff, dtype=float)
    origin = np.asarray(volume.origin) + (np.asarray(eff, dtype=float) - 1) / 2 * np.asarray(volume.spacing)
    return ChunkedVolume(volume.name, reduced, tuple(map(float, origin)), tuple(map(float, spacing)))


def downcast_volume(volume: ChunkedVolume, to: str = "float32") -> ChunkedVolume:
    """float64 fields as ``to`` (float32); other dtypes unchanged.

    Example:
        >>> downcast_volume(ChunkedVolume("p", da.ones(8).reshape(2, 2, 2), (0,) * 3, (1,) * 3)).data.dtype
        dtype('float32')
    """
    if volume.data.dtype != np.float64:
        return volume
    return ChunkedVolume(volume.name, volume.data.astype(to), volume.origin, volume.spacing)


def _axis_of(normal: Sequence[float]) -> int | None:
    nonzero = [a for a, v in enumerate(normal) if v != 0]
    return nonzero[0] if len(nonzero) == 1 else None


def _plane_image(values: dict[str, np.ndarray], axis: int, dims: tuple[int, int, int],
                 origin: Sequence[float], spacing: Sequence[float], position: float) -> pv.PolyData:
    """A one-point-thick ImageData along ``axis`` at ``position``, as PolyData (quads)."""
    plane_dims = list(dims)
    plane_dims[axis] = 1
    plane_origin = list(origin)
    plane_origin[axis] = position
    image = pv.ImageData(dimensions=plane_dims, spacing=spacing, origin=plane_origin)
    for name, array in values.items():
        image.point_data[name] = array.reshape(image.n_points, -1) if array.ndim > 3 else array.reshape(-1)
    return image.extract_surface(pass_pointid=False, pass_cellid=False, algorithm="dataset_surface")


def _lerp_planes(a: np.ndarray, b: np.ndarray | None, t: float, dtype) -> np.ndarray:
    if b is None or t == 0.0:
        return np.asarray(a)
    out = (1.0 - t) * np.asarray(a, dtype=np.float64) + t * np.asarray(b, dtype=np.float64)
    return out.astype(dtype) if np.issubdtype(dtype, np.floating) else out


def slice_volumes(volumes: dict[str, ChunkedVolume], normal: Sequence[float],
                  origin: Sequence[float] | None) -> Any:
    """A ``dask.delayed`` PolyData: all fields cut by a plane (the centre when ``origin`` is None).

    Axis-aligned planes read only the one or two point layers around the plane
    and interpolate linearly between them (what VTK's cutter computes);
    oblique planes are cut chunk by chunk and merged like contours.
    """
    first = next(iter(volumes.values()))
    bounds = first.bounds
    centre = [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)]
    origin = list(centre if origin is None else origin)
    axis = _axis_of(normal)
    if axis is None:
        return _oblique_slice(volumes, normal, origin)
    dims = first.dimensions
    position = (origin[axis] - first.origin[axis]) / first.spacing[axis]
    n = dims[axis]
    index = min(max(int(math.floor(position)), 0), n - 1)
    t = position - index
    if abs(t) < 1e-9 or index == n - 1:
        t = 0.0
    elif abs(1 - t) < 1e-9:
        index, t = index + 1, 0.0
    dask_axis = 2 - axis
    planes = {}
    for name, volume in volumes.items():
        low = plane_from_chunks(volume.data, dask_axis, index)
        high = plane_from_chunks(volume.data, dask_axis, index + 1) if t else None
        planes[name] = dask.delayed(_lerp_planes, pure=True)(low, high, t, volume.data.dtype)
    position_world = first.origin[axis] + (index + t) * first.spacing[axis]
    return dask.delayed(_plane_image, pure=True)(planes, axis, dims, first.origin, first.spacing, position_world)


def _take_plane(chunk: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.ascontiguousarray(np.take(chunk, [index], axis=axis))


def _assemble(pieces: list[np.ndarray], grid_shape: tuple[int, ...]) -> np.ndarray:
    """np.block of ``pieces`` laid out C-order on a grid of ``grid_shape`` chunks."""
    nested: Any = np.empty(grid_shape, dtype=object)
    for i, piece in enumerate(pieces):
        nested.flat[i] = piece
    return np.block(nested.tolist()) if len(pieces) > 1 else pieces[0]


def plane_from_chunks(data: Any, axis: int, index: int) -> Any:
    """A delayed one-layer array ``data`` at ``index`` along ``axis``, cut from the chunks' own tasks.

    Only the chunks that hold the plane are read, each once (a slice of a
    stored array might otherwise be read again from storage).
    """
    edges = np.concatenate([[0], np.cumsum(data.chunks[axis])])
    k = int(np.searchsorted(edges, index, side="right") - 1)
    grid = data.to_delayed(optimize_graph=False)  # shares the chunk reads with other steps
    layer = np.take(grid, [k], axis=axis)
    pieces = [dask.delayed(_take_plane, pure=True)(chunk, axis, index - int(edges[k])) for chunk in layer.flat]
    return dask.delayed(_assemble, pure=True)(pieces, layer.shape)


def _slice_block(blocks: dict[str, np.ndarray], start: tuple[int, int, int], origin, spacing,
                 normal, plane_origin) -> pv.PolyData:
    """The plane as the zero isosurface of the signed distance to it, fields interpolated.

    That is what VTK's cutter computes; done with :func:`contour_block`, the
    pieces of neighbouring chunks meet exactly (see :mod:`.chunked_contour`).
    """
    nz, ny, nx = next(iter(blocks.values())).shape[:3]
    axes = [np.float64(o) + (s0 + np.arange(n)) * np.float64(s) - np.float64(p)
            for o, s0, n, s, p in zip(origin, start, (nx, ny, nz), spacing, plane_origin)]
    distance = (normal[2] * axes[2][:, None, None] + normal[1] * axes[1][None, :, None]
                + normal[0] * axes[0][None, None, :])
    surface = contour_block(distance, start, origin, spacing, "hpcviz-plane-distance", [0.0], carried=blocks)
    surface.point_data.remove("hpcviz-plane-distance")
    return surface


def _oblique_slice(volumes: dict[str, ChunkedVolume], normal, origin) -> Any:
    """Cut box by box (:func:`cell_boxes`; boxes the plane misses are skipped), then merge."""
    first = next(iter(volumes.values()))
    unit = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
    aligned = {name: v.data.rechunk(first.data.chunks[:3] + v.data.chunks[3:]) for name, v in volumes.items()}
    boxes = {name: cell_boxes(data) for name, data in aligned.items()}
    pieces = []
    for number, (start, size, _) in enumerate(next(iter(boxes.values()))):
        lows = np.asarray(first.origin) + np.asarray(start) * np.asarray(first.spacing)
        highs = lows + (np.asarray(size) - 1) * np.asarray(first.spacing)
        corners = np.array(np.meshgrid(*zip(lows, highs), indexing="ij")).reshape(3, -1).T
        side = (corners - np.asarray(origin)) @ unit
        if side.min() > 0 or side.max() < 0:
            continue  # the plane misses this box
        blocks = {name: boxes[name][number][2] for name in volumes}
        pieces.append(dask.delayed(_slice_block, pure=True)(
            blocks, start, first.origin, first.spacing, tuple(unit), tuple(origin)))
    return dask.delayed(merge_pieces, pure=True)(pieces, seam_planes(first), first.origin, first.spacing)


__all__ = ["coarsen_volume", "crop_volume", "downcast_volume", "slice_volumes"]
