"""Thumbnails: the app's first view as a PNG, rendered offscreen."""

from __future__ import annotations

import io
import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np
import pytest
from PIL import Image

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.thumbnail import render_thumbnail


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def test_a_thumbnail_is_a_png_of_the_requested_size_and_not_blank(small_reduced):
    png = render_thumbnail(small_reduced.path, size=(320, 200))

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (320, 200)
    rgb = pixels(png)
    assert rgb.std() > 10
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50


def test_thumbnails_of_two_time_steps_differ(small_reduced):
    first = pixels(render_thumbnail(small_reduced, size=(320, 200), step=0))
    last = pixels(render_thumbnail(small_reduced, size=(320, 200), step=2))

    assert np.abs(first - last).mean() > 0.5


def test_thumbnails_of_two_fields_differ(small_reduced):
    pressure = pixels(render_thumbnail(small_reduced, size=(320, 200), field="pressure"))
    velocity = pixels(render_thumbnail(small_reduced, size=(320, 200), field="velocity"))

    assert np.abs(pressure - velocity).mean() > 0.5


def test_a_plain_dataset_gets_a_thumbnail_too(small_reduced):
    source = small_reduced.manifest["source"]
    png = render_thumbnail(source, size=(240, 160))

    assert Image.open(io.BytesIO(png)).size == (240, 160)
    assert pixels(png).std() > 5


def test_a_missing_path_or_unknown_field_is_an_input_error(small_reduced, tmp_path):
    with pytest.raises(InputError, match="nowhere.pvd: no such file"):
        render_thumbnail(tmp_path / "nowhere.pvd")
    with pytest.raises(InputError, match="pressure"):
        render_thumbnail(small_reduced, field="temperature")
