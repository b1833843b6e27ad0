"""The 3D scene: what the explorer and the thumbnail show for a dataset."""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np
import pytest
import pyvista as pv

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.scene import build_scene, load_view_data


@pytest.fixture
def plotter():
    plotter = pv.Plotter(off_screen=True, window_size=(400, 300))
    yield plotter
    plotter.close()


def image(plotter: pv.Plotter) -> np.ndarray:
    return plotter.screenshot(return_img=True).astype(np.int16)


def test_a_reduced_dataset_shows_its_outline_a_live_contour_and_its_layers(small_reduced, plotter):
    scene = build_scene(plotter, small_reduced)

    assert scene.field == "pressure"
    lo, hi = small_reduced.fields[0].range
    assert scene.contour_value == pytest.approx((lo + hi) / 2)
    assert [layer.name for layer in scene.layers] == [layer.name for layer in small_reduced.layers]
    actors = plotter.renderer.actors
    assert {"outline", "main", "layer:contour_pressure", "layer:slice_z"} <= set(actors)
    contour = actors["main"].mapper.GetInput()
    assert contour.GetNumberOfPoints() > 0
    assert actors["layer:contour_pressure"].prop.opacity < 1.0
    assert actors["layer:slice_z"].mapper.GetInput().GetNumberOfPoints() > 0
    assert np.allclose(actors["outline"].mapper.GetInput().GetBounds(), scene.volume(0).bounds)


def test_changing_the_time_step_swaps_inputs_and_changes_the_image(small_reduced, plotter):
    scene = build_scene(plotter, small_reduced)
    before = image(plotter)
    actors_before = dict(plotter.renderer.actors)

    scene.update(step=2)

    after = image(plotter)
    assert np.abs(after - before).mean() > 0.5
    assert dict(plotter.renderer.actors) == actors_before  # same pipeline, new inputs
    assert scene.step == 2


def test_contour_value_field_and_colormap_each_change_the_image(small_reduced, plotter):
    scene = build_scene(plotter, small_reduced)
    shots = [image(plotter)]
    n_points = plotter.renderer.actors["main"].mapper.GetInput().GetNumberOfPoints()

    scene.update(contour_value=0.2)
    assert plotter.renderer.actors["main"].mapper.GetInput().GetNumberOfPoints() != n_points
    shots.append(image(plotter))

    scene.update(field="velocity")
    lo, hi = scene.field_info("velocity").range
    assert scene.contour_value == pytest.approx((lo + hi) / 2)
    shots.append(image(plotter))

    scene.update(cmap="coolwarm")
    shots.append(image(plotter))

    for previous, current in zip(shots, shots[1:]):
        assert np.abs(current - previous).mean() > 0.2


def test_a_plain_dataset_is_shown_whole(session_dir, plotter):
    from prefect_hpcviz.viz.datasets import write_synthetic

    sim = write_synthetic(session_dir / "scene-sim", shape=(32, 32, 32), steps=3)
    data = load_view_data(sim)
    scene = build_scene(plotter, data)

    assert scene.layers == []
    assert scene.field_names == ["pressure", "velocity"]
    assert np.allclose(
        plotter.renderer.actors["outline"].mapper.GetInput().GetBounds(), data.read(0).bounds
    )
    assert plotter.renderer.actors["main"].mapper.GetInput().GetNumberOfPoints() > 0
    assert image(plotter).std() > 5


def test_a_resized_window_gets_its_text_laid_out_again_inside_the_picture(small_reduced, plotter):
    scene = build_scene(plotter, small_reduced)
    plotter.ren_win.SetSize(240, 150)  # as the browser resizes the explorer's view
    plotter.render()
    with_text = image(plotter)
    scene.annotations.set_visible(False)
    plotter.render()

    text = np.abs(with_text - image(plotter)).max(axis=2) > 24
    assert scene.annotations.layout.width == 240 and text.shape == (150, 240)
    assert text[:40, :60].any() and text[:, -30:].any()  # the time label, the colour legend
    assert not (text[:2].any() or text[-2:].any() or text[:, :2].any() or text[:, -2:].any())


def test_unknown_field_colormap_or_step_names_what_is_allowed(small_reduced, plotter):
    scene = build_scene(plotter, small_reduced)
    with pytest.raises(InputError, match="pressure, velocity"):
        scene.update(field="temperature")
    with pytest.raises(InputError, match="viridis"):
        scene.update(cmap="no-such-map")
    with pytest.raises(InputError, match=r"0\.\.2"):
        scene.update(step=7)
