"""Check a recipe against a dataset summary before any work is done.

A reduction can run for minutes on a cluster; a typo in a field name should
fail in milliseconds, naming the fields that do exist.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from ..errors import InputError
from .recipe import Recipe

#: Mesh kinds that ``coarsen`` can reduce (a regular lattice of points).
COARSENABLE_KINDS = ("ImageData", "StructuredGrid")


def _fmt(numbers: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in numbers) + "]"


def box_overlap(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...] | None:
    """The intersection of two boxes ``[xmin, xmax, ymin, ymax, zmin, zmax]`` (None if empty).

    Boxes that only touch overlap (the result is flat along that axis).

    Example:
        >>> box_overlap([0, 1, 0, 1, 0, 1], [0.5, 2, 0, 1, 0, 1])
        (0.5, 1, 0, 1, 0, 1)
    """
    out: list[float] = []
    for axis in range(3):
        lo = max(a[2 * axis], b[2 * axis])
        hi = min(a[2 * axis + 1], b[2 * axis + 1])
        if lo > hi:
            return None
        out += [lo, hi]
    return tuple(out)


def plane_meets_box(
    normal: Sequence[float], origin: Sequence[float], box: Sequence[float]
) -> bool:
    """Whether the plane through ``origin`` with ``normal`` meets the box.

    Example:
        >>> plane_meets_box([0, 0, 1], [9, 9, 0.5], [0, 1, 0, 1, 0, 1])
        True
    """
    signs = set()
    for corner in itertools.product(box[0:2], box[2:4], box[4:6]):
        d = sum(n * (c - o) for n, c, o in zip(normal, corner, origin))
        signs.add(0 if abs(d) < 1e-12 else (1 if d > 0 else -1))
    return not (signs == {1} or signs == {-1})


def check_recipe_against(recipe: Recipe, summary: Any, *, source: str = "recipe") -> None:
    """Raise :class:`InputError` if ``recipe`` cannot run on the dataset ``summary`` describes.

    Example:
        >>> check_recipe_against(Recipe.from_yaml("fields: [pressure]"), summary)  # doctest: +SKIP
    """
    by_name = {f.name: f for f in summary.fields}
    available = ", ".join(by_name) or "(none)"

    for name in recipe.fields or []:
        if name not in by_name:
            raise InputError(
                f"{source} 'fields'",
                f"unknown field {name!r}; available fields: {available}",
                "use names from the list above (they are case-sensitive)",
            )
    kept = set(recipe.fields) if recipe.fields is not None else set(by_name)

    box = tuple(float(v) for v in summary.bounds)
    kind = summary.kind
    for number, step in enumerate(recipe.steps, start=1):
        where = f"{source} step {number} ({step.kind})"
        spec = step.spec
        if step.kind == "crop":
            inside = box_overlap(box, spec.bounds)
            if inside is None:
                raise InputError(
                    where,
                    f"'bounds' {_fmt(spec.bounds)} miss the data, which spans {_fmt(box)}",
                    "choose bounds that overlap the data",
                )
            box = inside
            if kind != "ImageData":
                kind = "UnstructuredGrid"  # clip_box output
        elif step.kind == "coarsen":
            if kind not in COARSENABLE_KINDS:
                after_crop = summary.kind in COARSENABLE_KINDS
                raise InputError(
                    where,
                    f"coarsen works on {' and '.join(COARSENABLE_KINDS)} data; "
                    + (f"a crop of {summary.kind} data is an UnstructuredGrid" if after_crop
                       else f"this dataset is {summary.kind}"),
                    "put coarsen before crop" if after_crop
                    else "remove the coarsen step (crop still works on any mesh)",
                )
        elif step.kind == "contour":
            _check_contour_field(spec.field, by_name, kept, recipe.fields, where, available)
        elif step.kind == "slice":
            origin = spec.origin or tuple((box[2 * a] + box[2 * a + 1]) / 2 for a in range(3))
            if not plane_meets_box(spec.normal, origin, box):
                raise InputError(
                    where,
                    f"the plane through {_fmt(origin)} with normal {_fmt(spec.normal)} "
                    f"misses the volume, which spans {_fmt(box)}",
                    "move 'origin' inside the volume or leave it out for the centre",
                )
        elif step.kind == "statistics":
            for name in spec.fields or []:
                if name not in kept:
                    why = "is not in the dataset" if name not in by_name else "is dropped by the recipe's 'fields'"
                    raise InputError(
                        where,
                        f"'fields' names {name!r}, which {why}; available fields: "
                        f"{', '.join(n for n in by_name if n in kept) or '(none)'}",
                        "list fields the volume has at this step, or leave 'fields' out for all",
                    )


def _check_contour_field(
    name: str,
    by_name: dict[str, Any],
    kept: set[str],
    fields: list[str] | None,
    where: str,
    available: str,
) -> None:
    scalars = ", ".join(n for n, f in by_name.items() if f.components == 1) or "(none)"
    if name not in by_name:
        raise InputError(
            where,
            f"'field' {name!r} is not in the dataset; available fields: {available}",
            f"contour one of the scalar fields: {scalars}",
        )
    if name not in kept:
        raise InputError(
            where,
            f"'field' {name!r} is dropped by the recipe's 'fields' {fields}",
            f"add {name} to 'fields' or contour one of them",
        )
    if by_name[name].components != 1:
        raise InputError(
            where,
            f"'field' {name!r} is a vector field ({by_name[name].components} components); "
            "a contour needs a scalar field",
            f"contour one of the scalar fields: {scalars}",
        )
