"""The recipe: what to keep of a dataset and which layers to compute from it.

A recipe is a small YAML document (see DESIGN.md, "Recipe format")::

    fields: [pressure, velocity]   # optional: keep only these
    time: {stride: 2}              # optional: every 2nd time step
    steps:                         # applied in order
      - crop: {bounds: [0, 1, 0, 1, 0, 0.5]}
      - coarsen: {factor: 4, how: mean}
      - contour: {field: pressure, values: [0.2, 0.8]}
      - slice: {normal: [0, 0, 1], origin: [0, 0, 0.25]}

Volume steps (crop, coarsen) transform the volume in order; geometry steps
(contour, slice) each add an output layer computed from the volume as it
stands at that point. Steps are numbered from 1 in error messages, in the
order they appear in the file.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InputError
from .recipe_errors import describe_validation_error, show
from .recipe_steps import LAYER_STEPS, STEP_SPECS, OutputSpec, Step, StepModel, StepSpec, TimeSpec

#: Largest reduced volume the default recipe keeps, in points (about 96^3).
DEFAULT_MAX_POINTS = 96**3


class Recipe(BaseModel):
    """What to keep of a dataset and which layers to compute from it.

    Build one from YAML (:meth:`from_yaml`, :func:`load_recipe`), from a
    dataset summary (:meth:`default_for`) or in Python.

    Example:
        >>> r = Recipe.from_yaml('''
        ... time: {stride: 2}
        ... steps:
        ...   - coarsen: {factor: 4}
        ...   - contour: {field: pressure, values: [0.5]}
        ... ''')
        >>> [s.kind for s in r.steps], r.time.stride
        (['coarsen', 'contour'], 2)
        >>> r.steps[0].coarsen.factor
        (4, 4, 4)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: list[str] | None = Field(
        None, description="a list of field names, e.g. [pressure, velocity]"
    )
    time: TimeSpec | None = Field(None, description="a mapping, e.g. {stride: 2}")
    steps: list[Step] = Field(default_factory=list, description="a list of steps")
    output: OutputSpec | None = Field(
        None, description="a mapping, e.g. {format: vtkhdf, compression: zlib, level: 4}"
    )

    @field_validator("fields")
    @classmethod
    def _no_repeats(cls, fields: list[str] | None) -> list[str] | None:
        if fields is not None and (len(set(fields)) != len(fields) or not fields):
            raise ValueError("repeated or empty")
        return fields

    # -- building ---------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "recipe") -> Recipe:
        """Validate a parsed recipe (the YAML as Python objects).

        Args:
            data: a mapping with optional keys ``fields``, ``time``, ``steps``.
            source: how error messages name the recipe, e.g. its file name.

        Raises:
            InputError: naming the step (numbered from 1), the key, the bad
                value and the allowed values.

        Example:
            >>> Recipe.from_dict({"steps": [{"slice": {"normal": "x"}}]}).steps[0].slice.normal
            (1.0, 0.0, 0.0)
        """
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InputError(
                source,
                f"a recipe must be a mapping with keys fields, time, steps; got {show(data)}",
                "start from e.g. `steps: [{coarsen: {factor: 2}}]`",
            )
        data = copy.deepcopy(data)  # the shape check fills in `- slice:` -> {}
        _check_step_shapes(data.get("steps"), source)
        try:
            recipe = cls.model_validate(data)
        except ValidationError as error:
            raise describe_validation_error(error, data, source, cls) from None
        _check_step_order(recipe, source)
        return recipe

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "recipe") -> Recipe:
        """Parse and validate a recipe written in YAML.

        Example:
            >>> Recipe.from_yaml("fields: [pressure]").fields
            ['pressure']
        """
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
            if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
                problem += f" ({context} that starts on line {context_mark.line + 1})"
            raise InputError(
                f"{source}{where}",
                f"not valid YAML: {problem}",
                "fix the YAML syntax at that line (indentation, brackets, ':' after keys)",
            ) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def default_for(cls, summary: Any, *, max_points: int = DEFAULT_MAX_POINTS) -> Recipe:
        """A sensible first look at a dataset.

        Coarsens a structured volume to at most ``max_points`` points (about
        96^3), adds one contour of the first scalar field at the middle of its
        range and one slice through the centre with normal z.

        Args:
            summary: a ``DatasetSummary`` (see ``viz.datasets``).
            max_points: the largest volume to keep, in points.

        Example:
            >>> from prefect_hpcviz.viz.datasets import summarize  # doctest: +SKIP
            >>> Recipe.default_for(summarize("sim/simulation.pvd")).steps  # doctest: +SKIP
        """
        steps: list[dict[str, Any]] = []
        dims = getattr(summary, "dimensions", None)
        if dims and summary.kind in ("ImageData", "StructuredGrid"):
            factor = _factor_for(tuple(int(d) for d in dims), max_points)
            if factor > 1:
                steps.append({"coarsen": {"factor": factor, "how": "mean"}})
        scalars = [f for f in summary.fields if f.components == 1]
        scalars.sort(key=lambda f: f.association != "point")  # point fields first
        for f in scalars:
            lo, hi = (float(v) for v in f.range)
            if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
                steps.append({"contour": {"field": f.name, "values": [(lo + hi) / 2]}})
                break
        steps.append({"slice": {"normal": [0, 0, 1]}})
        return cls.from_dict({"steps": steps}, source="default recipe")

    # -- using ------------------------------------------------------------

    @property
    def stride(self) -> int:
        """The time stride (1 when the recipe has no ``time``)."""
        return self.time.stride if self.time else 1

    def to_dict(self) -> dict[str, Any]:
        """The recipe in its YAML shape, with defaults filled in (JSON-able).

        Example:
            >>> Recipe.from_yaml("steps: [{coarsen: {factor: 2}}]").to_dict()["steps"]
            [{'coarsen': {'factor': [2, 2, 2], 'how': 'mean'}}]

        Keys left unset (``None``) are left out, so adding an optional key
        in a later version does not change the cache key of older recipes.
        """
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        """The recipe as YAML that :meth:`from_yaml` reads back to an equal recipe."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def canonical_json(self) -> str:
        """A stable text form for hashing: sorted keys, defaults filled in.

        Two recipes that mean the same (keys in another order, ``factor: 4``
        vs ``factor: [4, 4, 4]``, ``normal: z`` vs ``[0, 0, 1]``) give the same text.

        Example:
            >>> a = Recipe.from_yaml("steps: [{coarsen: {how: mean, factor: 4}}]")
            >>> b = Recipe.from_yaml("steps: [{coarsen: {factor: [4, 4, 4]}}]")
            >>> a.canonical_json() == b.canonical_json()
            True
        """
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def check_against(self, summary: Any, *, source: str = "recipe") -> None:
        """Check the recipe fits a dataset before any work is done.

        Raises:
            InputError: an unknown field (listing the available ones), a contour
                of a vector field, a coarsen of an unstructured mesh, a crop box
                or slice plane that misses the data.

        Example:
            >>> recipe.check_against(open_dataset("sim.pvd").summary())  # doctest: +SKIP
        """
        from .recipe_checks import check_recipe_against

        check_recipe_against(self, summary, source=source)


def _check_step_shapes(steps: Any, source: str) -> None:
    """Friendly errors for the mistakes pydantic would describe obscurely."""
    if steps is None:
        return
    if not isinstance(steps, list):
        raise InputError(
            source,
            f"'steps' must be a list of steps; got {show(steps)}",
            "write one step per line, e.g. `steps:` then `  - coarsen: {factor: 4}`",
        )
    known = ", ".join(STEP_SPECS)
    for number, item in enumerate(steps, start=1):
        where = f"{source} step {number}"
        if isinstance(item, StepModel):
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise InputError(
                where,
                f"a step must be a mapping with one key, the step kind ({known}); got {show(item)}",
                "write each step as its own list item, e.g. `- coarsen: {factor: 4}`",
            )
        kind, options = next(iter(item.items()))
        if kind not in STEP_SPECS:
            raise InputError(
                where,
                f"unknown step kind {show(kind)}; known kinds: {known}",
                "use one of the known kinds, e.g. `- coarsen: {factor: 4}`",
            )
        if options is None:
            item[kind] = {}
        elif not isinstance(options, (dict, StepSpec)):
            raise InputError(
                f"{where} ({kind})",
                f"the options must be a mapping; got {show(options)}",
                f"write e.g. `{STEP_SPECS[kind].example}`",
            )


def _check_step_order(recipe: Recipe, source: str) -> None:
    """A decimate or clip changes the layer of the step before it: there must be one."""
    previous = None
    for number, step in enumerate(recipe.steps, start=1):
        if step.kind in LAYER_STEPS and (previous is None or not (previous.is_geometry or previous.kind in LAYER_STEPS)):
            after = f"after a {previous.kind} step" if previous is not None else "as the first step"
            raise InputError(
                f"{source} step {number} ({step.kind})",
                f"{step.kind} changes the layer made by the step right before it (contour or slice), "
                f"but it comes {after}",
                f"put it right after a contour or slice step, e.g. `- contour: ...` then `{step.spec.example}`",
            )
        previous = step
    out = recipe.output
    if out is not None and out.format == "vtkhdf" and out.compression not in (None, "none", "zlib"):
        raise InputError(f"{source} output", f"'compression' {out.compression!r} is not available for "
                         "vtkhdf (HDF5 deflate only)", "use compression: zlib, or format: vtk-xml")


def _factor_for(dims: tuple[int, int, int], max_points: int) -> int:
    """The smallest uniform coarsen factor that brings ``dims`` under ``max_points``."""
    factor = 1
    while math.prod(max(1, d // min(factor, d)) for d in dims) > max_points:
        factor += 1
    return factor


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a YAML file.

    Raises:
        InputError: the file is missing or unreadable, its YAML is broken
            (naming the line), or the recipe is invalid (naming the step).

    Example:
        >>> recipe = load_recipe("recipes/first-look.yaml")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(str(path), "no such recipe file", "check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            str(path), f"cannot read the recipe ({error})", "pass a readable UTF-8 YAML file"
        ) from None
    return Recipe.from_yaml(text, source=str(path))
