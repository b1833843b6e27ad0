"""The work of a reduction, as picklable module-level functions for Dask workers.

One :func:`reduce_time_step` call per kept time step reads that step, runs the
volume steps and the geometry steps of the recipe and writes this step's
files; :func:`write_series` then writes the .pvd series and returns the
manifest (less what only the caller knows: wall time and creation date).

Both write only into ``plan.work_dir`` and never create it, so once the
caller has removed that directory after a failure, a task still running
somewhere cannot bring it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvista as pv

from ..errors import InputError
from . import kernels, statistics
from .layer_steps import apply_layer_step
from .output_files import write_mesh
from .recipe import Recipe
from .vtk_xml import write_pvd


@dataclass(frozen=True)
class ReducePlan:
    """Everything a task needs: what to read, what to do, where to write.

    Attributes:
        dataset: the opened input (a ``viz.datasets.Dataset``; picklable).
        recipe: the validated recipe.
        steps: the input time steps to keep, in output order.
        layer_names: one unique name per geometry step, in recipe order.
        work_dir: the temporary output directory (already created).
    """

    dataset: Any
    recipe: Recipe
    steps: tuple[int, ...]
    layer_names: tuple[str, ...]
    work_dir: str


def layer_names(recipe: Recipe) -> list[str]:
    """A unique, readable file-name stem for each geometry step of ``recipe``.

    ``name:`` when the step sets it, else ``contour_<field>`` or
    ``slice_x|y|z`` (``slice`` for an oblique plane); repeats get ``_2``, ``_3``.

    Example:
        >>> r = Recipe.from_yaml("steps: [{slice: {}}, {slice: {}}, {contour: {field: p, values: [1]}}]")
        >>> layer_names(r)
        ['slice_z', 'slice_z_2', 'contour_p']
    """
    taken = {"volume", "manifest"}
    names = []
    for step in recipe.steps:
        if not step.is_geometry:
            continue
        spec = step.spec
        base = spec.name
        if base is None and step.kind == "contour":
            base = "contour_" + "".join(c if c.isalnum() or c in "_.-" else "_" for c in spec.field)
        elif base is None:
            axes = [a for a, v in zip("xyz", spec.normal) if v != 0]
            base = f"slice_{axes[0]}" if len(axes) == 1 else "slice"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names.append(name)
    return names


def step_nbytes(dataset: Any, step: int) -> int:
    """Bytes on storage of time step ``step`` (a share of the total for one-file formats)."""
    pieces = getattr(dataset, "pieces", None)
    if callable(pieces):
        try:
            return sum(int(p.location.stamp().size) for p in pieces(step))
        except Exception:  # noqa: BLE001 - fall back to the share below
            pass
    return int(round(dataset.nbytes / max(1, len(dataset.time_values))))


def field_ranges(mesh: pv.DataSet) -> dict[str, dict[str, Any]]:
    """Per array of ``mesh``: association, components, dtype and (min, max).

    A vector's range is that of its magnitude; NaNs are ignored; an array
    with no finite value has range (nan, nan).
    """
    out: dict[str, dict[str, Any]] = {}
    for association, data in (("point", mesh.point_data), ("cell", mesh.cell_data)):
        for name in data.keys():
            values = np.asarray(data[name])
            if values.dtype.kind not in "biuf":
                continue
            components = 1 if values.ndim == 1 else int(values.shape[1])
            magnitude = values if components == 1 else np.linalg.norm(values.astype(np.float64), axis=1)
            finite = magnitude[np.isfinite(magnitude)] if magnitude.size else magnitude
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
            out.setdefault(name, {"association": association, "components": components,
                                  "dtype": values.dtype.name, "range": (lo, hi)})
    return out


def _require_fields(mesh: pv.DataSet, plan: ReducePlan, step: int) -> None:
    present = set(mesh.point_data.keys()) | set(mesh.cell_data.keys())
    for name in plan.recipe.fields or []:
        if name not in present:
            raise InputError(
                f"{plan.dataset.source} time step {step}",
                f"field {name!r} is missing (this step has: {', '.join(sorted(present)) or 'none'})",
                "drop it from the recipe's 'fields', or fix the input",
            )


def reduce_time_step(plan: ReducePlan, position: int) -> dict[str, Any]:
    """Reduce kept time step number ``position`` and write its files into ``plan.work_dir``.

    Returns:
        A JSON-able record: position, time, volume file, layer files, bytes in
        and out, and the reduced volume's field ranges.

    Example:
        >>> record = reduce_time_step(plan, 0)  # doctest: +SKIP
        >>> record["volume"]                     # doctest: +SKIP
        'volume_000000.vti'
    """
    step = plan.steps[position]
    recipe = plan.recipe
    mesh = plan.dataset.read(step, fields=recipe.fields)
    _require_fields(mesh, plan, step)
    volume = kernels.select_fields(mesh, recipe.fields)
    work_dir = Path(plan.work_dir)
    names = iter(plan.layer_names)
    layers: list[list[Any]] = []  # [name, mesh]
    statistics_records: list[dict[str, Any]] = []
    for number, recipe_step in enumerate(recipe.steps, start=1):
        spec = recipe_step.spec
        kind = recipe_step.kind
        try:
            if kind == "crop":
                volume = kernels.crop(volume, spec.bounds)
            elif kind == "coarsen":
                volume = kernels.coarsen(volume, spec.factor, spec.how)
            elif kind == "downcast":
                volume = kernels.downcast(volume, spec.to)
            elif kind == "contour":
                layers.append([next(names), kernels.contour(volume, spec.field, spec.values)])
            elif kind == "slice":
                layers.append([next(names), kernels.slice_plane(volume, spec.normal, spec.origin)])
            elif kind in ("decimate", "clip"):
                layers[-1][1] = apply_layer_step(layers[-1][1], kind, spec, volume.center)
            elif kind == "statistics":
                statistics_records += mesh_statistics(volume, spec, number)
        except InputError as error:
            raise InputError(
                f"{plan.dataset.source} time step {step}, recipe step {number} ({kind})",
                f"{error.input}: {error.problem}", error.fix,
            ) from None
    written = 0
    files: dict[str, str] = {}
    for name, layer in layers:
        path = write_mesh(layer, work_dir / f"{name}_{position:06d}", recipe.output)
        written += path.stat().st_size
        files[name] = path.name
    path = write_mesh(volume, work_dir / f"volume_{position:06d}", recipe.output)
    written += path.stat().st_size
    return {
        "position": position,
        "step": step,
        "time": float(plan.dataset.time_values[step]),
        "volume": path.name,
        "layers": files,
        "kind": volume.GetClassName().removeprefix("vtk"),
        "dimensions": list(volume.dimensions) if hasattr(volume, "dimensions") else None,
        "bounds": [float(b) for b in volume.bounds],
        "n_points": int(volume.n_points),
        "ranges": field_ranges(volume),
        "statistics": statistics_records,
        "bytes_in": step_nbytes(plan.dataset, step),
        "bytes_out": written,
    }


def mesh_statistics(mesh: pv.DataSet, spec: Any, number: int) -> list[dict[str, Any]]:
    """The statistics step on a whole mesh: one record per field (see :mod:`.statistics`)."""
    out = []
    arrays = {**{n: mesh.cell_data[n] for n in mesh.cell_data.keys()},
              **{n: mesh.point_data[n] for n in mesh.point_data.keys()}}
    for name in spec.fields or list(arrays):
        values = np.asarray(arrays[name])
        block = values.reshape(-1, 1, 1, values.shape[1]) if values.ndim == 2 else values
        record = statistics.field_statistics([block], spec.bins, spec.range)
        out.append({"recipe_step": number, "field": name, **record})
    return out


def _merge_ranges(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for record in records:
        for name, info in record["ranges"].items():
            entry = merged.setdefault(name, {**info, "range": [math.inf, -math.inf]})
            lo, hi = info["range"]
            if not math.isnan(lo):
                entry["range"] = [min(entry["range"][0], lo), max(entry["range"][1], hi)]
    fields = []
    for name, info in merged.items():
        lo, hi = info["range"]
        fields.append({
            "name": name, "association": info["association"], "components": info["components"],
            "dtype": info["dtype"], "range": [lo, hi] if lo <= hi else [None, None],
        })
    fields.sort(key=lambda f: f["association"] != "point")
    return fields


def write_series(plan: ReducePlan, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Write volume.pvd and one <layer>.pvd; return the manifest body.

    The caller adds ``seconds`` and ``created`` and writes manifest.json.
    """
    records = sorted(records, key=lambda r: r["position"])
    work_dir = Path(plan.work_dir)
    times = [r["time"] for r in records]
    volume_files = [r["volume"] for r in records]
    written = write_pvd(work_dir / "volume.pvd", list(zip(times, volume_files))).stat().st_size
    kinds = [s.kind for s in plan.recipe.steps if s.is_geometry]
    layers = []
    for name, kind in zip(plan.layer_names, kinds):
        files = [r["layers"][name] for r in records]
        written += write_pvd(work_dir / f"{name}.pvd", list(zip(times, files))).stat().st_size
        layers.append({"name": name, "kind": kind, "files": files, "series": f"{name}.pvd"})
    last = records[-1]
    return {
        "time_values": times,
        "input_steps": [r["step"] for r in records],
        "volume": {
            "files": volume_files,
            "series": "volume.pvd",
            "kind": last["kind"],
            "extension": Path(last["volume"]).suffix,
            "dimensions": last["dimensions"],
            "bounds": last["bounds"],
            "n_points": last["n_points"],
        },
        "layers": layers,
        "fields": _merge_ranges(records),
        "statistics": [
            {"time": r["time"], "step": r["step"], "fields": r["statistics"]}
            for r in records if r.get("statistics")
        ],
        "bytes_in": sum(r["bytes_in"] for r in records),
        "bytes_out": written + sum(r["bytes_out"] for r in records),
    }


__all__ = ["ReducePlan", "layer_names", "reduce_time_step", "write_series"]
