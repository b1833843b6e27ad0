"""Isosurfaces of a chunked volume, one Dask task per chunk, merged without seams.

Each chunk is contoured with flying edges on its own points, and the cells
between chunks in thin seam slabs (two points thick) cut from the
neighbouring chunks' tasks (:func:`cell_boxes`): every cell of the volume is
in exactly one box, so the triangles are those a whole-volume run makes, and
no chunk waits in memory for its neighbours. Every box is given the *global*
origin and its own index extent, so a point on a plane shared by two boxes
is interpolated by both from the same two grid points with the same
formula: the coordinates agree to the last bit and :func:`merge_pieces`
merges them exactly (no tolerance), leaving neither duplicated points nor
cracks. :func:`contour_pieces` stops short of the last merge: it merges
the boxes of each block of chunks into one piece, so a big surface is never
held by one task (the pieces share only the points on the planes between
them).

Example:
    >>> vol = open_dataset("run.zarr").volume(0, "f")          # doctest: +SKIP
    >>> surface = dask.compute(contour_volume(vol, [0.5]))[0]   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da  # noqa: F401 (doctest)
import numpy as np
import pyvista as pv
from vtkmodules.util.numpy_support import numpy_to_vtk
from vtkmodules.vtkCommonDataModel import vtkImageData

from ..datasets.volume import ChunkedVolume
from .kernels import flying_edges


def contour_block(values: np.ndarray, start: tuple[int, int, int], origin: Sequence[float],
                  spacing: Sequence[float], name: str, isovalues: Sequence[float],
                  carried: dict[str, np.ndarray] | None = None, normals: bool = False) -> pv.PolyData:
    """Flying edges on one block ``values[z, y, x]`` whose first point has global index ``start`` (i, j, k).

    ``carried`` blocks (same lattice) are interpolated onto the surface.
    ``normals`` adds VTK's point ``Normals`` (from the field's gradient; on
    the block's outer planes one-sided differences, as at a volume's walls).

    Example:
        >>> block = np.fromfunction(lambda z, y, x: x + y + z, (4, 4, 4), dtype=np.float32)
        >>> contour_block(block, (0, 0, 0), (0, 0, 0), (1, 1, 1), "f", [4.5]).n_cells > 0
        True
    """
    nz, ny, nx = values.shape[:3]
    image = vtkImageData()
    i, j, k = (int(s) for s in start)
    image.SetExtent(i, i + nx - 1, j, j + ny - 1, k, k + nz - 1)
    image.SetOrigin(*(float(o) for o in origin))
    image.SetSpacing(*(float(s) for s in spacing))
    flat = np.ascontiguousarray(values).reshape(-1)
    array = numpy_to_vtk(flat, deep=False)
    array.SetName(name)
    image.GetPointData().SetScalars(array)
    keep = [flat]
    for other, block in (carried or {}).items():
        other_flat = np.ascontiguousarray(block).reshape(nx * ny * nz, -1)
        other_array = numpy_to_vtk(other_flat if other_flat.shape[1] > 1 else other_flat[:, 0], deep=False)
        other_array.SetName(other)
        image.GetPointData().AddArray(other_array)
        keep.append(other_flat)
    out = flying_edges(image, name, isovalues, normals=normals, interpolate=bool(carried))
    del keep  # the VTK arrays borrowed these until Update; the output owns its own arrays
    return out


def block_starts(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[int, int, int, int, int, int]]:
    """(z0, z1, y0, y1, x0, x1) index ranges of the chunks of a [z, y, x] dask array.

    Example:
        >>> block_starts(((2, 2), (3,), (3,)))
        [(0, 2, 0, 3, 0, 3), (2, 4, 0, 3, 0, 3)]
    """
    edges = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in chunks[:3]]
    out = []
    for a, b, c in itertools.product(*(range(len(e) - 1) for e in edges)):
        out.append(tuple(int(v) for v in (edges[0][a], edges[0][a + 1], edges[1][b], edges[1][b + 1],
                                          edges[2][c], edges[2][c + 1])))
    return out


def _take(chunk: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """A copy of ``chunk[box]``, never a view: a view would keep the whole chunk alive until the seam is merged."""
    return np.array(chunk[box], order="C", copy=True)


def _assemble(pieces: list[np.ndarray], grid_shape: tuple[int, int, int]) -> np.ndarray:
    """np.block of 3-D ``pieces`` laid out C-order on a (z, y, x) grid of ``grid_shape``."""
    if len(pieces) == 1:
        return pieces[0]
    nested: Any = np.empty(grid_shape, dtype=object)
    for i, piece in enumerate(pieces):
        nested.flat[i] = piece
    return np.block(nested.tolist())


def box_from_chunks(grid: np.ndarray, edges: list[np.ndarray], box: tuple[int, ...]) -> Any:
    """A delayed array of the points ``box`` = (z0, z1, y0, y1, x0, x1), cut from the chunks' own tasks.

    ``grid`` is ``data.to_delayed()`` (3-D), ``edges`` the chunk boundaries per
    axis. Each overlapping chunk contributes a small slice task, so no chunk
    is read twice and none waits in memory for a neighbour.
    """
    spans = []
    for axis in range(3):
        lo, hi = box[2 * axis], box[2 * axis + 1]
        e = edges[axis]
        first = int(np.searchsorted(e, lo, side="right") - 1)
        last = int(np.searchsorted(e, hi - 1, side="right") - 1)
        spans.append([(k, slice(int(max(lo, e[k]) - e[k]), int(min(hi, e[k + 1]) - e[k])))
                      for k in range(first, last + 1)])
    pieces = []
    for (a, sz), (b, sy), (c, sx) in itertools.product(*spans):
        pieces.append(dask.delayed(_take, pure=True)(grid[a, b, c], (sz, sy, sx)))
    return dask.delayed(_assemble, pure=True)(pieces, tuple(len(s) for s in spans))


def cell_boxes(data: Any) -> list[tuple[tuple[int, int, int], tuple[int, int, int], Any]]:
    """Point boxes whose cells cover every cell of ``data`` exactly once, built chunk by chunk.

    Per chunk: the chunk itself (the cells between its own points), then up to
    three seam slabs two points thick, for the cells between it and its high
    neighbours in x, in y (with the x seam column) and in z (with both). Only
    the slabs wait for neighbours, so a chunk's memory is freed as soon as it
    is contoured. Returns, per box: (i, j, k) global index of its first
    point, (nx, ny, nz) its size in points, and the delayed box [z, y, x(, c)].

    Example:
        >>> len(cell_boxes(da.zeros((8, 8, 8), chunks=4)))  # 8 chunks + 12 seam slabs
        20
    """
    return [box for boxes in chunk_cell_boxes(data).values() for box in boxes]


Box = tuple  # ((i, j, k) first point, (nx, ny, nz) points, delayed [z, y, x(, c)] values)


def chunk_cell_boxes(data: Any) -> dict[tuple[int, int, int], list[Box]]:
    """:func:`cell_boxes` grouped by the chunk (z, y, x block index) that owns them.

    A chunk owns its own box and the seam slabs on its high sides.

    Example:
        >>> [len(boxes) for boxes in chunk_cell_boxes(da.zeros((8, 8, 4), chunks=4)).values()]
        [3, 2, 2, 1]
    """
    grid = data.to_delayed(optimize_graph=False)  # the same chunk tasks as every other step: one read each
    grid = grid.reshape(grid.shape[:3])
    edges = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in data.chunks[:3]]
    nz, ny, nx = data.shape[:3]
    out = {}
    for (a, b, c) in itertools.product(*(range(n) for n in grid.shape)):
        z0, z1 = int(edges[0][a]), int(edges[0][a + 1])
        y0, y1 = int(edges[1][b]), int(edges[1][b + 1])
        x0, x1 = int(edges[2][c]), int(edges[2][c + 1])
        xe, ye = min(x1 + 1, nx), min(y1 + 1, ny)
        boxes = []
        mine = out.setdefault((a, b, c), [])
        if z1 - z0 > 1 and y1 - y0 > 1 and x1 - x0 > 1:
            mine.append(((x0, y0, z0), (x1 - x0, y1 - y0, z1 - z0), grid[a, b, c]))
        if x1 < nx and z1 - z0 > 1 and y1 - y0 > 1:
            boxes.append((z0, z1, y0, y1, x1 - 1, x1 + 1))
        if y1 < ny and z1 - z0 > 1 and xe - x0 > 1:
            boxes.append((z0, z1, y1 - 1, y1 + 1, x0, xe))
        if z1 < nz and ye - y0 > 1 and xe - x0 > 1:
            boxes.append((z1 - 1, z1 + 1, y0, ye, x0, xe))
        for box in boxes:
            mine.append(((box[4], box[2], box[0]), (box[5] - box[4], box[3] - box[2], box[1] - box[0]),
                         box_from_chunks(grid, edges, box)))
    return out


def seam_planes(volume: ChunkedVolume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index positions (x, y, z) of the point planes that two boxes of :func:`cell_boxes` share."""
    out = []
    for chunks in volume.data.chunks[:3]:
        inner = np.cumsum(chunks)[:-1].astype(int)
        out.append(np.unique(np.concatenate([inner - 1, inner])))
    return out[2], out[1], out[0]


def contour_volume(volume: ChunkedVolume, isovalues: Sequence[float],
                   carried: dict[str, ChunkedVolume] | None = None) -> Any:
    """A ``dask.delayed`` PolyData: the isosurfaces of ``volume`` at ``isovalues``.

    One task per chunk and per seam slab between chunks (:func:`cell_boxes`),
    then one merge task. Like a whole-volume contour, the surface has point
    ``Normals`` and the ``carried`` fields (other fields on the same grid)
    interpolated onto it.
    """
    boxes = _field_boxes(volume, carried)
    pieces = _box_contours([(chunk, n) for chunk, own in boxes[None].items() for n in range(len(own))],
                           boxes, volume, isovalues)
    seams = seam_planes(volume)
    return dask.delayed(merge_pieces, pure=True)(pieces, seams, volume.origin, volume.spacing)


#: Input bytes of the chunks behind one piece of a partitioned isosurface (:func:`piece_groups`).
PIECE_BYTES = 256 * 2**20


def piece_groups(data: Any, piece_bytes: int | None = None) -> list[list[tuple[int, int, int]]]:
    """The chunks of ``data`` in blocks of chunks, each block under ``piece_bytes`` (default :data:`PIECE_BYTES`).

    A block doubles along x, then y, then z while it fits, so its pieces are compact.

    Example:
        >>> [len(g) for g in piece_groups(da.zeros((8, 8, 8), chunks=4), piece_bytes=4 * 64 * 8)]
        [4, 4]
    """
    chunk_bytes = max(math.prod(max(c) for c in data.chunks) * data.dtype.itemsize, 1)
    per_group = max(1, int((PIECE_BYTES if piece_bytes is None else piece_bytes) // chunk_bytes))
    counts = [len(c) for c in data.chunks[:3]]
    side = [1, 1, 1]
    for axis in itertools.cycle((2, 1, 0)):  # grow x, then y, then z, while the block still fits
        if all(side[a] >= counts[a] for a in range(3)):
            break
        if side[axis] >= counts[axis]:
            continue
        trial = side.copy()
        trial[axis] = min(2 * side[axis], counts[axis])
        if math.prod(trial) > per_group:
            break
        side = trial
    groups = []
    for start in itertools.product(*(range(0, n, s) for n, s in zip(counts, side))):
        groups.append(list(itertools.product(*(range(s0, min(s0 + s, n)) for s0, s, n in zip(start, side, counts)))))
    return groups


def contour_pieces(volume: ChunkedVolume, isovalues: Sequence[float], piece_bytes: int | None = None,
                   carried: dict[str, ChunkedVolume] | None = None) -> list[Any]:
    """The isosurfaces of ``volume`` as a few ``dask.delayed`` PolyData pieces, one per :func:`piece_groups` block.

    Seams inside a piece are merged exactly (:func:`merge_pieces`); a point on a
    plane shared by two pieces is in both, bit for bit equal, and nowhere
    else. So the pieces appended and merged on :func:`seam_planes` (or by
    ``vtkCleanPolyData`` with tolerance 0) are the surface of
    :func:`contour_volume`: no duplicated points, no cracks. No task ever holds
    more than one piece, so no worker holds the whole surface.

    Example:
        >>> pieces = dask.compute(*contour_pieces(vol, [0.5]))           # doctest: +SKIP
        >>> merge_pieces(pieces, seam_planes(vol), vol.origin, vol.spacing)  # doctest: +SKIP
    """
    boxes = _field_boxes(volume, carried)
    seams = seam_planes(volume)
    return [
        dask.delayed(merge_pieces, pure=True)(
            _box_contours([(chunk, n) for chunk in group for n in range(len(boxes[None][chunk]))],
                          boxes, volume, isovalues),
            seams, volume.origin, volume.spacing)
        for group in piece_groups(volume.data, piece_bytes)
    ]


def _field_boxes(volume: ChunkedVolume, carried: dict[str, ChunkedVolume] | None) -> dict[str | None, Any]:
    """:func:`chunk_cell_boxes` of the contoured field (key None) and of each carried field, box for box."""
    boxes: dict[str | None, Any] = {None: chunk_cell_boxes(volume.data)}
    for name, other in (carried or {}).items():
        data = other.data
        if data.chunks[:3] != volume.data.chunks[:3]:
            data = data.rechunk(volume.data.chunks[:3] + data.chunks[3:])
        boxes[name] = chunk_cell_boxes(data)
    return boxes


def _box_contours(where: list[tuple[tuple[int, int, int], int]], boxes: dict[str | None, Any],
                  volume: ChunkedVolume, isovalues: Sequence[float]) -> list[Any]:
    """One contour task per (chunk, box number) of ``where``, carrying the other fields' same boxes."""
    tasks = []
    for chunk, number in where:
        start, _, values = boxes[None][chunk][number]
        carried = {name: by_chunk[chunk][number][2] for name, by_chunk in boxes.items() if name is not None}
        tasks.append(dask.delayed(contour_block_arrays, pure=True)(
            values, start, volume.origin, volume.spacing, volume.name, tuple(isovalues), carried, True))
    return tasks


MeshArrays = tuple  # (points float32 (n, 3), triangles int32 (m, 3), {name: point values})


def mesh_arrays(mesh: pv.PolyData) -> MeshArrays:
    """A triangle mesh as compact NumPy arrays (half the bytes of VTK's cell arrays in transit).

    Example:
        >>> points, triangles, data = mesh_arrays(pv.Triangle())
        >>> triangles.tolist()
        [[0, 1, 2]]
    """
    triangles = (np.asarray(mesh.faces).reshape(-1, 4)[:, 1:] if mesh.n_cells else np.empty((0, 3)))
    data = {n: np.asarray(mesh.point_data[n]) for n in mesh.point_data.keys()}
    return np.asarray(mesh.points, dtype=np.float32), triangles.astype(np.int32), data


def contour_block_arrays(*args: Any) -> MeshArrays:
    """:func:`contour_block` as :func:`mesh_arrays` (what contour tasks hand to the merge)."""
    return mesh_arrays(contour_block(*args))


def merge_pieces(pieces: Sequence[pv.PolyData | MeshArrays], seams: Sequence[np.ndarray] = ((), (), ()),
                 origin: Sequence[float] = (0, 0, 0), spacing: Sequence[float] = (1, 1, 1)) -> pv.PolyData:
    """Append triangle meshes and merge the points they share on seam planes (exact match only).

    A point is a seam candidate when one of its coordinates lies on a seam
    plane; candidates with identical coordinates become one point. Other
    points are left as they are, so the result has as many points as the
    whole-volume contour.

    Example:
        >>> merge_pieces([pv.Triangle(), pv.Triangle()], ((0, 1), (), ()), (0, 0, 0), (1, 1, 1)).n_points
        4
    """
    pieces = [mesh_arrays(p) if isinstance(p, pv.PolyData) else p for p in pieces if p is not None]
    pieces = [p for p in pieces if len(p[0])]
    if not pieces:
        return pv.PolyData()
    points = np.concatenate([p[0] for p in pieces])
    starts = np.cumsum([0] + [len(p[0]) for p in pieces[:-1]])
    triangles = np.concatenate([p[1].astype(np.int64) + start for p, start in zip(pieces, starts)])
    names = [n for n in pieces[0][2] if all(n in p[2] for p in pieces)]
    data = {n: np.concatenate([p[2][n] for p in pieces]) for n in names}
    del pieces

    candidate = np.zeros(len(points), dtype=bool)
    for axis in range(3):
        planes = np.asarray(seams[axis], dtype=np.float64)
        if planes.size:
            values = (np.float64(origin[axis]) + planes * np.float64(spacing[axis])).astype(points.dtype)
            candidate |= np.isin(points[:, axis], values)
    keep = np.ones(len(points), dtype=bool)
    remap = np.arange(len(points), dtype=np.int64)
    where = np.flatnonzero(candidate)
    if where.size:
        rows = np.ascontiguousarray(points[where]).view(np.dtype((np.void, points.dtype.itemsize * 3))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        remap[where] = where[first[inverse.ravel()]]
        keep[where] = False
        keep[where[first]] = True
    new_index = np.cumsum(keep) - 1
    triangles = new_index[remap[triangles]]
    out = pv.PolyData.from_regular_faces(points[keep], triangles)
    for name, values in data.items():
        out.point_data[name] = values[keep]
    if "Normals" in data:
        out.GetPointData().SetActiveNormals("Normals")  # renderers shade smoothly with them
    return out


__all__ = ["PIECE_BYTES", "block_starts", "chunk_cell_boxes", "contour_block", "contour_pieces", "contour_volume",
           "merge_pieces", "piece_groups", "seam_planes"]
