"""The Dask graph of a recipe on a uniform-grid dataset, chunk by chunk.

For each kept time step every field is a lazy :class:`ChunkedVolume`; volume
steps (crop, coarsen, downcast) transform the dask arrays, geometry steps
(contour, slice) and the layer steps after them (decimate, clip) become
``dask.delayed`` meshes, statistics become per-chunk reductions. What is
computed are the *outputs*: one task per chunk of the reduced volume (each
writes its chunk into the step's .vti file), one per layer file, one per
statistics record. Each returns a small JSON-able fragment; :func:`assemble`
turns the fragments into the per-step records of :mod:`.worker_tasks`.

Peak memory per worker is a few chunks, not a time step: no task ever holds a
whole field. VTKHDF volumes are deflated chunk by chunk by their own tasks
and put into one file in turn (:mod:`.vtkhdf_volume`); only compressed VTK
XML, whose compressed blocks are numbered over the whole array, gathers the
*reduced* volume into one task. An isosurface (VTK XML output,
no decimate or clip after it) is written in pieces, one task per block of
chunks (:func:`.chunked_contour.contour_pieces`), listed by a .pvtp; one that
fits in one piece, or that a decimate or clip needs whole, is merged by one
task into one file, as slices are.

Example:
    >>> outputs = step_outputs(plan, 0)            # doctest: +SKIP
    >>> fragments = dask.compute(*outputs)          # doctest: +SKIP
    >>> records = assemble(plan, fragments)         # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pyvista as pv
from dask.graph_manipulation import bind

from ..datasets.volume import ChunkedVolume
from ..errors import InputError
from . import statistics
from .chunked_contour import block_starts, contour_pieces, contour_volume, piece_groups
from .chunked_ops import coarsen_volume, crop_volume, downcast_volume, slice_volumes
from .layer_steps import apply_layer_step
from .output_files import write_mesh
from .volume_file import VtiLayout, create_vti, write_block
from .vtk_xml import write_pvtp
from .vtkhdf_volume import VtkhdfLayout, create_vtkhdf, regular_chunks, remove_lock, write_vtkhdf_block
from .worker_tasks import ReducePlan, step_nbytes


def _where(plan: ReducePlan, step: int, number: int, kind: str) -> str:
    return f"{plan.dataset.source} time step {step}, recipe step {number} ({kind})"


def step_outputs(plan: ReducePlan, position: int, chunk_bytes: int | None = None) -> list[Any]:
    """The output tasks (``dask.delayed``) of kept time step number ``position``."""
    step = plan.steps[position]
    recipe = plan.recipe
    dataset = plan.dataset
    names = list(recipe.fields) if recipe.fields else list(dataset._field_names()[0])
    volumes = {name: dataset.volume(step, name, chunk_bytes=chunk_bytes) for name in names}
    layer_names = iter(plan.layer_names)
    layers: list[list[Any]] = []  # [name, delayed mesh, (field, isovalues, carried) while it may be written in pieces]
    outputs: list[Any] = []
    for number, recipe_step in enumerate(recipe.steps, start=1):
        spec = recipe_step.spec
        kind = recipe_step.kind
        try:
            if kind == "crop":
                volumes = {n: crop_volume(v, spec.bounds) for n, v in volumes.items()}
            elif kind == "coarsen":
                factor = spec.factor
                volumes = {n: coarsen_volume(v, factor, spec.how) for n, v in volumes.items()}
            elif kind == "downcast":
                volumes = {n: downcast_volume(v, spec.to) for n, v in volumes.items()}
            elif kind == "contour":
                field = volumes[spec.field]
                if field.components != 1:
                    raise InputError(f"contour field {spec.field!r}", "is a vector field; a contour needs a "
                                     "scalar field", "contour a scalar field")
                others = {n: v for n, v in volumes.items() if n != spec.field}  # interpolated onto it
                layers.append([next(layer_names), contour_volume(field, spec.values, others),
                               (field, spec.values, others)])
            elif kind == "slice":
                layers.append([next(layer_names), slice_volumes(volumes, spec.normal, spec.origin), None])
            elif kind in ("decimate", "clip"):
                centre = _centre(volumes)
                layers[-1][1] = dask.delayed(apply_layer_step, pure=True)(layers[-1][1], kind, spec, centre)
                layers[-1][2] = None  # decimate and clip need the whole surface
            elif kind == "statistics":
                outputs += _statistics_outputs(volumes, spec, position, number)
        except InputError as error:
            raise InputError(_where(plan, step, number, kind), f"{error.input}: {error.problem}",
                             error.fix) from None
    work_dir = Path(plan.work_dir)
    xml = recipe.output is None or recipe.output.format == "vtk-xml"
    for name, mesh, contour in layers:
        stem = str(work_dir / f"{name}_{position:06d}")
        if contour is not None and xml and len(piece_groups(contour[0].data)) > 1:
            outputs += _partitioned_layer_outputs(*contour, stem, recipe.output, position, name)
        else:
            outputs.append(dask.delayed(_write_layer, pure=True)(mesh, stem, recipe.output, position, name))
    outputs += _volume_outputs(plan, volumes, position)
    return outputs


def _centre(volumes: dict[str, ChunkedVolume]) -> tuple[float, float, float]:
    b = next(iter(volumes.values())).bounds
    return tuple((b[2 * a] + b[2 * a + 1]) / 2 for a in range(3))  # type: ignore[return-value]


def _write_layer(mesh: pv.DataSet, stem: str, output: Any, position: int, name: str) -> dict[str, Any]:
    path = write_mesh(mesh, stem, output)
    return {"position": position, "what": "layer", "name": name, "file": path.name,
            "bytes": path.stat().st_size, "cells": int(mesh.n_cells)}


def _partitioned_layer_outputs(field: ChunkedVolume, isovalues: Any, carried: dict[str, ChunkedVolume],
                               stem: str, output: Any, position: int, name: str) -> list[Any]:
    """An isosurface written piece by piece (one task per piece) plus its .pvtp header (see :func:`contour_pieces`)."""
    pieces = [dask.delayed(_write_piece, pure=True)(piece, f"{stem}_p{number:04d}", output, position)
              for number, piece in enumerate(contour_pieces(field, isovalues, carried=carried))]
    header = dask.delayed(_write_piece_header, pure=True)(pieces, stem, position, name)
    return [*pieces, header]


def _write_piece(mesh: pv.PolyData, stem: str, output: Any, position: int) -> dict[str, Any]:
    path = write_mesh(mesh, stem, output)
    arrays = [(n, values.dtype.name, 1 if values.ndim == 1 else int(values.shape[1]))
              for n, values in ((n, np.asarray(mesh.point_data[n])) for n in mesh.point_data.keys())]
    return {"position": position, "what": "layer-piece", "file": path.name, "path": str(path),
            "bytes": path.stat().st_size, "cells": int(mesh.n_cells),
            "points": np.asarray(mesh.points).dtype.name if mesh.n_points else None, "arrays": arrays}


def _write_piece_header(pieces: list[dict[str, Any]], stem: str, position: int, name: str) -> dict[str, Any]:
    """The .pvtp listing the non-empty pieces (the first piece when all are empty)."""
    listed = [p for p in pieces if p["cells"]] or pieces[:1]
    for unlisted in pieces:
        if unlisted not in listed:
            Path(unlisted["path"]).unlink(missing_ok=True)
    typed = next((p for p in listed if p["points"]), None)
    path = write_pvtp(f"{stem}.pvtp", [p["file"] for p in listed], typed["points"] if typed else "float32",
                      typed["arrays"] if typed else [])
    return {"position": position, "what": "layer", "name": name, "file": path.name,
            "bytes": path.stat().st_size + sum(p["bytes"] for p in listed),
            "cells": sum(p["cells"] for p in pieces)}


def _statistics_outputs(volumes: dict[str, ChunkedVolume], spec: Any, position: int, number: int) -> list[Any]:
    outputs = []
    for name in spec.fields or list(volumes):
        data = volumes[name].data
        blocks = data.to_delayed(optimize_graph=False).ravel().tolist()
        moments = dask.delayed(statistics.combine_moments, pure=True)(
            [dask.delayed(statistics.block_moments, pure=True)(b) for b in blocks])
        if spec.range is not None:
            value_range: Any = tuple(spec.range)
            hist_blocks = blocks
        else:
            # A second read of the data, started only once min and max are known,
            # so no chunk is held in memory while the first pass runs.
            value_range = dask.delayed(statistics.histogram_range, pure=True)(moments)
            hist_blocks = bind(data, [moments]).to_delayed().ravel().tolist()
        counts = [dask.delayed(_histogram_or_none, pure=True)(b, spec.bins, value_range) for b in hist_blocks]
        outputs.append(dask.delayed(_statistics_record, pure=True)(
            moments, counts, spec.bins, value_range, position, number, name))
    return outputs


def _histogram_or_none(block: np.ndarray, bins: int, value_range: Any) -> np.ndarray | None:
    return None if value_range is None else statistics.block_histogram(block, bins, value_range)


def _statistics_record(moments, counts, bins, value_range, position, number, name) -> dict[str, Any]:
    total = None if value_range is None else np.sum(counts, axis=0)
    return {"position": position, "what": "statistics", "step": number, "field": name,
            "statistics": statistics.summarize_moments(moments, total, bins, value_range)}


def _volume_outputs(plan: ReducePlan, volumes: dict[str, ChunkedVolume], position: int) -> list[Any]:
    first = next(iter(volumes.values()))
    stem = Path(plan.work_dir) / f"volume_{position:06d}"
    output = plan.recipe.output
    streamed = output is None or (output.format == "vtk-xml" and output.compression in (None, "none"))
    if output is not None and output.format == "vtkhdf":
        return _vtkhdf_volume_outputs(volumes, f"{stem}.vtkhdf", output, position)
    if not streamed:  # compressed VTK XML: its blocks are numbered over the whole array
        images = {n: v.data for n, v in volumes.items()}
        return [dask.delayed(_write_whole_volume, pure=True)(
            images, first.origin, first.spacing, str(stem), output, position)]
    fields = {n: (v.data.shape, v.data.dtype) for n, v in volumes.items()}
    layout = VtiLayout.plan(fields, first.origin, first.spacing)
    path = f"{stem}.vti"
    created = dask.delayed(create_vti, pure=True)(path, layout)
    outputs = []
    for name, volume in volumes.items():
        data = volume.data.astype(np.float32) if volume.data.dtype == np.float16 else volume.data
        blocks = data.to_delayed(optimize_graph=False).reshape(-1)  # unfused: chunk reads shared
        for block, (z0, _, y0, _, x0, _) in zip(blocks, block_starts(data.chunks)):
            outputs.append(dask.delayed(_write_block_after, pure=True)(
                created, layout, name, block, (z0, y0, x0), position))
    return outputs


def _vtkhdf_volume_outputs(volumes: dict[str, ChunkedVolume], path: str, output: Any, position: int) -> list[Any]:
    """One task per chunk and field, each deflating its chunk and writing it into one VTKHDF file."""
    first = next(iter(volumes.values()))
    data = {n: v.data.rechunk(regular_chunks(v.data.shape, first.data.chunks[:3] + v.data.chunks[3:]))
            for n, v in volumes.items()}
    chunk = tuple(max(c) for c in next(iter(data.values())).chunks[:3])
    layout = VtkhdfLayout.plan({n: (d.shape, d.dtype) for n, d in data.items()}, chunk, first.origin,
                               first.spacing, 0 if output.compression in (None, "none") else output.level)
    created = dask.delayed(create_vtkhdf, pure=True)(path, layout)
    outputs = []
    for name, values in data.items():
        blocks = values.to_delayed(optimize_graph=False).reshape(-1)
        for block, (z0, _, y0, _, x0, _) in zip(blocks, block_starts(values.chunks)):
            outputs.append(dask.delayed(_write_vtkhdf_block_after, pure=True)(
                created, layout, name, block, (z0, y0, x0), position))
    return outputs


def _write_vtkhdf_block_after(path: str, layout: VtkhdfLayout, name: str, block: np.ndarray,
                              start: tuple[int, int, int], position: int) -> dict[str, Any]:
    lo, hi, _ = write_vtkhdf_block(path, layout, name, block, start)
    return {"position": position, "what": "volume-block", "field": name, "file": Path(path).name,
            "range": [lo, hi], "components": 1 if np.asarray(block).ndim == 3 else int(block.shape[3]),
            "dtype": next(d for n, _, d in layout.arrays if n == name)}


def _write_block_after(path: Path, layout: VtiLayout, name: str, block: np.ndarray,
                       start: tuple[int, int, int], position: int) -> dict[str, Any]:
    lo, hi, nbytes = write_block(path, layout, name, block, start)
    return {"position": position, "what": "volume-block", "field": name, "file": Path(path).name,
            "range": [lo, hi], "components": 1 if np.asarray(block).ndim == 3 else int(block.shape[3]),
            "dtype": np.asarray(block).dtype.name}


def _write_whole_volume(images: dict[str, np.ndarray], origin, spacing, stem: str, output: Any,
                        position: int) -> dict[str, Any]:
    first = next(iter(images.values()))
    nz, ny, nx = first.shape[:3]
    image = pv.ImageData(dimensions=(nx, ny, nz), spacing=spacing, origin=origin)
    fragments = []
    for name, values in images.items():
        values = np.asarray(values)
        if values.dtype == np.float16:
            values = values.astype(np.float32)
        image.point_data[name] = values.reshape(image.n_points, -1) if values.ndim == 4 else values.reshape(-1)
        magnitude = values if values.ndim == 3 else np.linalg.norm(values.astype(np.float64), axis=3)
        finite = magnitude[np.isfinite(magnitude)] if magnitude.dtype.kind == "f" else magnitude.reshape(-1)
        fragments.append((name, [float(finite.min()), float(finite.max())] if finite.size else [math.inf, -math.inf],
                          1 if values.ndim == 3 else int(values.shape[3]), values.dtype.name))
    path = write_mesh(image, stem, output)
    return {"position": position, "what": "volume-file", "file": path.name, "fields": fragments}


def volume_geometry(plan: ReducePlan, position: int, chunk_bytes: int | None = None) -> dict[str, Any]:
    """Kind, dimensions, bounds and point count of the reduced volume of kept step ``position`` (no data read)."""
    step = plan.steps[position]
    names = list(plan.recipe.fields) if plan.recipe.fields else list(plan.dataset._field_names()[0])
    volume = plan.dataset.volume(step, names[0], chunk_bytes=chunk_bytes)
    for recipe_step in plan.recipe.steps:
        if recipe_step.kind == "crop":
            volume = crop_volume(volume, recipe_step.spec.bounds)
        elif recipe_step.kind == "coarsen":
            volume = coarsen_volume(volume, recipe_step.spec.factor, recipe_step.spec.how)
    dims = volume.dimensions
    return {"kind": "ImageData", "dimensions": list(dims), "bounds": list(volume.bounds),
            "n_points": int(math.prod(dims))}


def assemble(plan: ReducePlan, fragments: list[dict[str, Any]], geometry: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per kept step, the record :func:`.worker_tasks.write_series` expects, from the output fragments."""
    work_dir = Path(plan.work_dir)
    records = []
    for position, step in enumerate(plan.steps):
        mine = [f for f in fragments if f["position"] == position]
        ranges: dict[str, dict[str, Any]] = {}
        volume_file = None
        for fragment in mine:
            if fragment["what"] == "volume-block":
                volume_file = fragment["file"]
                entry = ranges.setdefault(fragment["field"], {
                    "association": "point", "components": fragment["components"],
                    "dtype": fragment["dtype"], "range": [math.inf, -math.inf]})
                lo, hi = fragment["range"]
                entry["range"] = [min(entry["range"][0], lo), max(entry["range"][1], hi)]
            elif fragment["what"] == "volume-file":
                volume_file = fragment["file"]
                for name, (lo, hi), components, dtype in fragment["fields"]:
                    ranges[name] = {"association": "point", "components": components, "dtype": dtype,
                                    "range": [lo, hi]}
        if volume_file:
            remove_lock(work_dir / volume_file)  # the VTKHDF writers' turn-taking lock, if any
        for entry in ranges.values():
            if entry["range"][0] > entry["range"][1]:
                entry["range"] = [math.nan, math.nan]
            entry["range"] = tuple(entry["range"])
        layers = {f["name"]: f["file"] for f in mine if f["what"] == "layer"}
        stats = [{"recipe_step": f["step"], "field": f["field"], **f["statistics"]}
                 for f in sorted((f for f in mine if f["what"] == "statistics"), key=lambda f: (f["step"], f["field"]))]
        written = sum(f["bytes"] for f in mine if f["what"] == "layer")
        written += (work_dir / volume_file).stat().st_size if volume_file else 0
        records.append({
            "position": position,
            "step": step,
            "time": float(plan.dataset.time_values[step]),
            "volume": volume_file,
            "layers": layers,
            **geometry[position],
            "ranges": ranges,
            "statistics": stats,
            "bytes_in": step_nbytes(plan.dataset, step),
            "bytes_out": written,
        })
    return records


__all__ = ["assemble", "step_outputs", "volume_geometry"]
