"""Task: an offscreen thumbnail of reduced data."""

from __future__ import annotations

from prefect import task

from prefect_hpcviz.viz.reduce import ReducedDataset


@task(name="render-thumbnail", retries=1)
def render_thumbnail(reduced: ReducedDataset, size: tuple[int, int] = (640, 400)) -> bytes:
    """A PNG of the view the scientist will first see.

    Example:
        >>> png = render_thumbnail(reduced)
        >>> png[:4]
        b'\\x89PNG'
    """
    from prefect_hpcviz.viz.thumbnail import render_thumbnail as render

    return render(reduced, size=size)
