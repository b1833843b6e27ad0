"""opengl_info: which OpenGL an offscreen render window got (here: whatever EGL finds)."""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import pytest  # noqa: E402
import pyvista as pv  # noqa: E402

from prefect_hpcviz.viz.errors import InputError  # noqa: E402
from prefect_hpcviz.viz.opengl_info import opengl_info  # noqa: E402


def test_a_rendered_window_reports_its_renderer_and_whether_it_is_software():
    plotter = pv.Plotter(off_screen=True, window_size=(32, 32))
    try:
        plotter.screenshot()
        info = opengl_info(plotter.render_window)
    finally:
        plotter.close()

    assert info.renderer and info.version and info.vendor
    assert info.egl_vendor  # the tests render through EGL (conftest)
    assert info.software == ("llvmpipe" in info.renderer or "softpipe" in info.renderer)
    assert info.nvidia == ("NVIDIA" in info.vendor.upper())
    assert str(info).startswith(f"{info.renderer}, OpenGL {info.version}")


def test_a_window_that_never_rendered_is_refused_with_what_to_do():
    plotter = pv.Plotter(off_screen=True, window_size=(32, 32))
    try:
        with pytest.raises(InputError, match="no OpenGL context yet. Render it once first"):
            opengl_info(plotter.render_window)
    finally:
        plotter.close()
