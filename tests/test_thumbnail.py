"""Thumbnails: the app's first view as a PNG, rendered offscreen."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np
import pytest
from PIL import Image

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.thumbnail import render_thumbnail

RECIPE = """
steps:
  - contour: {field: pressure, values: [0.6]}
  - slice: {normal: [0, 0, 1]}
"""


@pytest.fixture(scope="module")
def reduced(session_dir: Path):
    """A 32^3, 3-step synthetic simulation reduced with a contour and a slice layer."""
    from distributed import Client, LocalCluster

    from prefect_hpcviz.viz.datasets import write_synthetic
    from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset

    sim = write_synthetic(session_dir / "scene-sim", shape=(32, 32, 32), steps=3)
    with LocalCluster(processes=False, n_workers=1, dashboard_address=None) as cluster, Client(cluster) as client:
        return reduce_dataset(sim, Recipe.from_yaml(RECIPE), session_dir / "scene-reduced", client=client)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def test_a_thumbnail_is_a_png_of_the_requested_size_and_not_blank(reduced):
    png = render_thumbnail(reduced.path, size=(320, 200))

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (320, 200)
    rgb = pixels(png)
    assert rgb.std() > 10
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50


def test_thumbnails_of_two_time_steps_differ(reduced):
    first = pixels(render_thumbnail(reduced, size=(320, 200), step=0))
    last = pixels(render_thumbnail(reduced, size=(320, 200), step=2))

    assert np.abs(first - last).mean() > 0.5


def test_thumbnails_of_two_fields_differ(reduced):
    pressure = pixels(render_thumbnail(reduced, size=(320, 200), field="pressure"))
    velocity = pixels(render_thumbnail(reduced, size=(320, 200), field="velocity"))

    assert np.abs(pressure - velocity).mean() > 0.5


def test_a_plain_dataset_gets_a_thumbnail_too(reduced):
    source = reduced.manifest["source"]
    png = render_thumbnail(source, size=(240, 160))

    assert Image.open(io.BytesIO(png)).size == (240, 160)
    assert pixels(png).std() > 5


def test_a_warm_process_renders_a_thumbnail_in_well_under_two_seconds(reduced):
    render_thumbnail(reduced, size=(640, 400))  # warm: EGL and shaders initialised
    started = time.perf_counter()
    render_thumbnail(reduced, size=(640, 400), step=1)
    assert time.perf_counter() - started < 2.0  # ~0.3 s measured on 16 cores


def test_a_missing_path_or_unknown_field_is_an_input_error(reduced, tmp_path):
    with pytest.raises(InputError, match="nowhere.pvd: no such file"):
        render_thumbnail(tmp_path / "nowhere.pvd")
    with pytest.raises(InputError, match="pressure"):
        render_thumbnail(reduced, field="temperature")
