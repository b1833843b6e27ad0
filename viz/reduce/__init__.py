"""Reduce simulation output to something a browser can show: a recipe run as a Dask graph.

Example:
    >>> from prefect_hpcviz.viz.reduce import load_recipe, reduce_dataset  # doctest: +SKIP
    >>> data = reduce_dataset("sim/simulation.pvd", load_recipe("first-look.yaml"), "reduced")  # doctest: +SKIP
    >>> [layer.name for layer in data.layers], data.bytes_out < data.bytes_in  # doctest: +SKIP
    (['contour_pressure', 'slice_z'], True)
"""

from .engine import ENGINE_VERSION, build_graph, cache_key, reduce_dataset
from .recipe import Recipe, load_recipe
from .result import Layer, ReducedDataset, is_reduced_dir, read_layer

__all__ = [
    "ENGINE_VERSION",
    "Layer",
    "Recipe",
    "ReducedDataset",
    "build_graph",
    "cache_key",
    "is_reduced_dir",
    "load_recipe",
    "read_layer",
    "reduce_dataset",
]
