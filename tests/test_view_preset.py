"""View presets: the thumbnail and the explorer app open the same preset view."""

from __future__ import annotations

import io
import json
import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np
import pytest
from PIL import Image
from trame.app import get_server

from prefect_hpcviz.viz.apps.explorer import create_app
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.thumbnail import render_thumbnail
from prefect_hpcviz.viz.view_preset import ViewPreset

PRESET = {"camera": "+z", "field": "velocity", "colormap": "coolwarm", "range": [0.0, 0.5], "contours": [0.3, 0.6]}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def test_a_preset_thumbnail_differs_from_the_default_one(small_reduced):
    default = pixels(render_thumbnail(small_reduced, size=(320, 200)))
    preset = pixels(render_thumbnail(small_reduced, size=(320, 200), view=PRESET))

    assert np.abs(default - preset).mean() > 2


@pytest.mark.parametrize("camera", ["+x", "-y", {"position": [3, 3, 0.5], "focal_point": [0.5, 0.5, 0.5], "up": [0, 0, 1]}])
def test_each_camera_gives_its_own_picture(small_reduced, camera):
    iso = pixels(render_thumbnail(small_reduced, size=(160, 100), view={"camera": "iso"}))
    other = pixels(render_thumbnail(small_reduced, size=(160, 100), view={"camera": camera}))

    assert np.abs(iso - other).mean() > 1


def test_the_app_restores_the_preset_from_the_environment(small_reduced, monkeypatch):
    monkeypatch.setenv("HPCVIZ_VIEW", json.dumps(PRESET))
    app = create_app(small_reduced.path, server=get_server("explorer-preset"))
    state = app.state

    assert state.field == "velocity"
    assert state.cmap == "coolwarm"
    assert state.contour_value == pytest.approx(0.3)
    assert state.scalar_range == [0.0, 0.5]
    assert state.view == PRESET | {"range": [0.0, 0.5], "contours": [0.3, 0.6]}
    assert app.scene.extra_contours == (0.6,)
    direction = np.subtract(app.plotter.camera.position, app.plotter.camera.focal_point)
    assert direction[2] > 0 and abs(direction[0]) < 1e-6 and abs(direction[1]) < 1e-6, "camera on the +z side"


def test_the_app_and_the_thumbnail_show_the_same_picture(small_reduced):
    thumbnail = pixels(render_thumbnail(small_reduced, size=(1024, 768), view=PRESET))
    app = create_app(small_reduced.path, server=get_server("explorer-same"), view=ViewPreset.from_dict(PRESET))
    app.plotter.render()
    shown = app.plotter.screenshot(return_img=True).astype(np.int16)
    default = pixels(render_thumbnail(small_reduced, size=(1024, 768)))

    assert np.abs(shown - thumbnail).mean() < 0.5 * np.abs(shown - default).mean()


def test_reset_camera_returns_to_the_preset_camera(small_reduced):
    app = create_app(small_reduced.path, server=get_server("explorer-reset"), view=ViewPreset(camera="-x"))
    start = app.plotter.camera.position
    app.plotter.camera.Azimuth(40)
    assert not np.allclose(app.plotter.camera.position, start)
    app.reset_camera()

    assert np.allclose(app.plotter.camera.position, start)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ({"camera": "top"}, r"key 'camera'.*'top' is not a named view"),
        ({"colormap": "jett"}, r"key 'colormap'.*'jett' is not a colormap"),
        ({"range": [1, 0]}, r"key 'range'.*not increasing"),
        ({"contour": [1]}, r"key 'contour'.*unknown key.*contours"),
    ],
)
def test_a_bad_preset_names_the_key(preset, expected):
    with pytest.raises(InputError, match=expected):
        ViewPreset.from_dict(preset, source="view")


def test_a_preset_naming_a_missing_field_fails_with_the_fields_there_are(small_reduced, monkeypatch):
    monkeypatch.setenv("HPCVIZ_VIEW", '{"field": "temperature"}')
    with pytest.raises(InputError, match="temperature.*pressure, velocity"):
        create_app(small_reduced.path, server=get_server("explorer-bad-field"))


def test_a_bad_camera_pose_names_the_nested_key():
    with pytest.raises(InputError, match=r"key 'camera.upp': unknown key. Use only position, focal_point, up"):
        ViewPreset.from_dict({"camera": {"position": [0, 0, 1], "focal_point": [0, 0, 0], "upp": [0, 1, 0]}})
    with pytest.raises(InputError, match=r"key 'camera': position and focal_point are the same point"):
        ViewPreset.from_dict({"camera": {"position": [1, 1, 1], "focal_point": [1, 1, 1]}})


def test_choosing_another_field_drops_the_presets_range_and_extra_contours(small_reduced):
    app = create_app(small_reduced.path, server=get_server("explorer-other-field"), view=ViewPreset.from_dict(PRESET))
    app.state.ready()
    app.state.field = "pressure"
    app.state.flush()

    pressure = app.scene.field_info("pressure").range
    assert app.state.scalar_range == pytest.approx(list(pressure))
    assert app.scene.extra_contours == ()
