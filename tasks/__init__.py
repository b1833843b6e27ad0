"""Prefect tasks: thin wrappers that add logging, retries and artifacts around
the engine in :mod:`prefect_hpcviz.viz`.

Use them one by one in your own flow::

    from prefect import flow
    from prefect_hpcviz.tasks import (
        publish_visualization, reduce_dataset, render_thumbnail, summarize_dataset)

    @flow
    def my_simulation():
        output = run_solver()                       # your step
        summary = summarize_dataset(output)
        reduced = reduce_dataset(output, "recipe.yaml", summary=summary)
        publish_visualization(reduced, summary=summary, thumbnail=render_thumbnail(reduced))
"""

from prefect_hpcviz.tasks.artifacts import create_viz_artifacts
from prefect_hpcviz.tasks.publish import Publication, publish_visualization
from prefect_hpcviz.tasks.reduce import reduce_dataset
from prefect_hpcviz.tasks.render import render_thumbnail
from prefect_hpcviz.tasks.summarize import summarize_dataset

__all__ = [
    "Publication",
    "create_viz_artifacts",
    "publish_visualization",
    "reduce_dataset",
    "render_thumbnail",
    "summarize_dataset",
]
