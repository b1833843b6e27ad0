"""Turn pydantic's validation errors into recipe errors a user can act on.

A pydantic error says ``steps.1.coarsen.coarsen.how: Input should be 'mean'
or 'max'``; a user wants ``recipe step 2 (coarsen): 'how' must be one of mean,
max; got 'median'``. The allowed values come from each field's description in
:mod:`.recipe`, so the model and its messages cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import InputError
from .recipe_steps import STEP_SPECS, OutputSpec, TimeSpec


def show(value: Any, limit: int = 80) -> str:
    """A short, recognisable rendering of a value from the YAML."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raw(data: Any, path: tuple[Any, ...]) -> Any:
    """The value the user wrote at ``path`` (``...`` when it is not there)."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return ...
    return data


def _describe(
    model: type[BaseModel], key: str, shown: str, error_type: str, value: Any
) -> str:
    """The problem text for one key of one model."""
    if error_type == "extra_forbidden":
        known = ", ".join(model.model_fields)
        return f"unknown key {shown!r}; known keys: {known}"
    info = model.model_fields.get(key)
    wanted = info.description if info is not None and info.description else "valid"
    if error_type == "missing":
        return f"{shown!r} is required: {wanted}"
    return f"{shown!r} must be {wanted}; got {show(value)}"


def describe_validation_error(
    error: ValidationError, data: dict[str, Any], source: str, recipe_model: type[BaseModel]
) -> InputError:
    """The first error of ``error`` as an :class:`InputError` naming step, key and allowed values.

    Args:
        error: what ``Recipe.model_validate(data)`` raised.
        data: the recipe as parsed from YAML.
        source: how to name the recipe ("recipe" or its file name).
        recipe_model: the ``Recipe`` class (passed in: recipe.py imports this module).

    Example:
        >>> Recipe.from_yaml("time: {stride: 0}")  # doctest: +SKIP
        InputError: recipe: 'time.stride' must be a whole number >= 1, e.g. 2; got 0. ...
    """
    first = error.errors()[0]
    loc = tuple(first["loc"])
    kind_error = first["type"]

    def nested(depth: int) -> str:
        # An error inside a key's value (a tuple too short, a bad list item)
        # is about the whole value: report it as the key's bad value.
        return kind_error if len(loc) <= depth else "value"

    if loc[:1] == ("steps",) and len(loc) >= 5:
        number, kind, key = loc[1], loc[3], str(loc[4])
        spec = STEP_SPECS[kind]
        value = _raw(data, ("steps", number, kind, key))
        problem = _describe(spec, key, key, nested(5), value)
        return InputError(f"{source} step {number + 1} ({kind})", problem, f"write e.g. `{spec.example}`")

    for top_key, spec_model in (("time", TimeSpec), ("output", OutputSpec)):
        if loc[:1] == (top_key,) and len(loc) >= 2:
            key = str(loc[1])
            value = _raw(data, (top_key, key))
            problem = _describe(spec_model, key, f"{top_key}.{key}", nested(2), value)
            return InputError(source, problem, f"write e.g. `{spec_model.example}`")

    top = str(loc[0]) if loc else "recipe"
    value = _raw(data, (top,))
    problem = _describe(recipe_model, top, top, nested(1), value)
    return InputError(
        source, problem, "a recipe has the keys fields, time, output (all optional) and steps"
    )
