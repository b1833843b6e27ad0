"""The explorer app: its controls drive the scene (no browser needed here)."""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np
import pytest
from trame.app import get_server

from prefect_hpcviz.viz.apps import APPS, get_app_factory
from prefect_hpcviz.viz.errors import InputError


def test_the_explorer_offers_the_fields_colormaps_and_time_steps_of_the_data(small_reduced):
    app = get_app_factory("explorer")(small_reduced.path, server=get_server("explorer-offers"))
    state = app.state

    assert state.title == "simulation.pvd"
    assert [item["value"] for item in state.field_items] == ["pressure", "velocity"]
    assert {"viridis", "plasma", "coolwarm", "turbo", "gray"} <= set(state.cmap_items)
    assert state.time_max == 2
    assert state.time_label.startswith("t = 0 ")
    assert state.contour_min < state.contour_value < state.contour_max
    html = app.ui.html
    for hook in ('id="hpcviz-view"', 'data-testid="time-slider"', 'id="hpcviz-time-label"',
                 'data-testid="field-select"', 'data-testid="cmap-select"',
                 'data-testid="contour-slider"', 'data-testid="reset-camera"', 'id="hpcviz-title"'):
        assert hook in html


def test_moving_the_controls_updates_the_scene_and_the_labels(small_reduced):
    app = get_app_factory("explorer")(small_reduced.path, server=get_server("explorer-controls"))
    state = app.state
    state.ready()
    first = app.plotter.screenshot(return_img=True).astype(np.int16)

    state.time_index = 2
    state.flush()
    assert app.scene.step == 2
    assert state.time_label.startswith("t = 1 ")

    state.field = "velocity"
    state.flush()
    assert app.scene.field == "velocity"
    assert state.contour_max == pytest.approx(app.scene.field_info("velocity").range[1])
    assert state.contour_label.startswith("velocity = ")

    state.cmap = "plasma"
    state.flush()
    assert app.scene.cmap == "plasma"
    app.plotter.render()  # what a connected client's image push does
    last = app.plotter.screenshot(return_img=True).astype(np.int16)
    assert np.abs(last - first).mean() > 0.5


def test_an_unknown_app_name_lists_the_apps():
    assert "explorer" in APPS
    with pytest.raises(InputError, match="Use one of: explorer"):
        get_app_factory("paraview-everything")
