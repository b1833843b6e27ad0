"""Check a command's inputs before any server starts, so bad input fails at once."""

from __future__ import annotations

from prefect_hpcviz.viz.datasets import summarize
from prefect_hpcviz.viz.reduce import load_recipe


def check_inputs(source: str, recipe: str | None) -> None:
    """Raise InputError naming the input when ``source`` or ``recipe`` is unusable.

    Opens the dataset (missing path, unknown format, truncated file) and, when
    a recipe file is given, parses it and checks it against the dataset's
    fields, dimensions and bounds.

    Example:
        >>> check_inputs("run/output.pvd", "recipes/overview.yaml")
    """
    summary = summarize(source)
    if recipe:
        load_recipe(recipe).check_against(summary, source=recipe)
