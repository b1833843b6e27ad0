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


THUMBNAIL_SIZES = [(160, 100), (160, 120), (240, 150), (320, 200), (320, 240), (640, 400), (960, 600), (1024, 768)]
"""Sizes the code and the docs use, from the tests' smallest to the explorer's window."""


@pytest.mark.parametrize("size", THUMBNAIL_SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize(
    "view",
    [{"field": "pressure", "colormap": "coolwarm", "range": [-0.2, 1.2]}, {"field": "velocity"}],
    ids=["pressure-with-negative-labels", "velocity"],
)
def test_the_time_label_and_the_colour_legend_sit_inside_the_picture_at_every_size(small_reduced, size, view):
    with_text = pixels(render_thumbnail(small_reduced, size=size, view=view))
    scene_alone = pixels(render_thumbnail(small_reduced, size=size, view=view, annotations=False))

    text = np.abs(with_text - scene_alone).max(axis=2) > 24  # what the annotations drew
    width, height = size
    assert text[: height // 4, : width // 4].any(), "no time label in the top-left corner"
    assert text[:, -width // 8 :].any(), "no colour legend at the right edge"
    edges = {"top": text[:2], "bottom": text[-2:], "left": text[:, :2], "right": text[:, -2:]}
    touching = [edge for edge, band in edges.items() if band.any()]
    assert not touching, f"text cut at the {', '.join(touching)} edge of a {width}x{height} thumbnail"


def test_a_picture_too_small_for_legible_text_gets_none_rather_than_cut_text(small_reduced):
    with_text = pixels(render_thumbnail(small_reduced, size=(48, 32)))
    scene_alone = pixels(render_thumbnail(small_reduced, size=(48, 32), annotations=False))

    assert scene_alone.std() > 5
    assert np.array_equal(with_text, scene_alone)


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
