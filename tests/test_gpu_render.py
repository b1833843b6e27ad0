"""On an NVIDIA GPU node the views and thumbnails render on the GPU, through EGL.

The pip wheels of VTK pick their OpenGL at run time: NVIDIA's EGL driver when
libglvnd finds it, else Mesa's CPU rasterizer (llvmpipe), which renders the
same picture much slower. These tests render a reduced dataset through our
own code (``build_scene``, what the apps draw; ``render_thumbnail``) and check
both that the context is NVIDIA's and that the picture shows the data.

Marker ``gpu``: CI deselects it (``-m "not gpu"``); on a machine without an
NVIDIA GPU it skips (fails under CI=true, like every missing component).

    .venv/bin/python -m pytest -m gpu tests/test_gpu_render.py
"""

from __future__ import annotations

import os
import shutil
import subprocess

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.conftest import require  # noqa: E402
from tests.helpers import is_rendered, pixels  # noqa: E402

pytestmark = pytest.mark.gpu


def nvidia_gpu() -> str | None:
    """The first line of ``nvidia-smi -L`` naming a GPU, or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return next((line for line in listing.splitlines() if line.startswith("GPU ")), None)


@pytest.fixture(scope="module")
def gpu() -> str:
    found = nvidia_gpu()
    require(found is not None, "an NVIDIA GPU", "run on a GPU node (`nvidia-smi -L` lists none here)")
    return found


def data_fraction(image: np.ndarray) -> float:
    """Share of an RGB picture's pixels that differ from the background (a vertical gradient).

    The gradient changes only from row to row, so each row's background is
    its leftmost pixel; a picture of the background alone scores 0, the
    explorer's first view of the data about 0.2 to 0.3.
    """
    image = np.asarray(image, dtype=np.float32)[..., :3]
    background = image[:, :1, :]
    return float((np.abs(image - background).max(axis=2) > 10).mean())


def test_the_view_renders_on_the_nvidia_gpu(gpu, small_reduced):
    import pyvista as pv

    from prefect_hpcviz.viz.opengl_info import opengl_info
    from prefect_hpcviz.viz.scene import build_scene

    plotter = pv.Plotter(off_screen=True, window_size=(1024, 768))  # the explorer app's window
    try:
        scene = build_scene(plotter, small_reduced)
        scene.annotations.set_visible(False)
        frame = plotter.screenshot(return_img=True)
        info = opengl_info(plotter.render_window)
    finally:
        plotter.close()
    print(f"{gpu}\nrendered by: {info}")

    assert info.nvidia, f"not NVIDIA's OpenGL: {info}"
    assert not info.software, f"software rendering: {info}"
    assert info.egl_vendor.upper().startswith("NVIDIA"), f"not NVIDIA's EGL: {info}"
    assert data_fraction(frame) > 0.05, "the data is missing from the picture"


def test_a_full_hd_thumbnail_renders_on_the_nvidia_gpu(gpu, small_reduced, tmp_path):
    import pyvista as pv

    from prefect_hpcviz.viz.opengl_info import opengl_info
    from prefect_hpcviz.viz.thumbnail import render_thumbnail

    png = render_thumbnail(small_reduced, size=(1920, 1080))
    (tmp_path / "thumbnail.png").write_bytes(png)

    probe = pv.Plotter(off_screen=True, window_size=(16, 16))  # same process, same EGL vendor and device
    try:
        probe.screenshot()
        info = opengl_info(probe.render_window)
    finally:
        probe.close()
    assert info.nvidia and not info.software, f"this process renders with {info}"
    assert pixels(png).shape == (1080, 1920, 3)
    assert is_rendered(png)
    assert data_fraction(pixels(png)) > 0.05, "the data is missing from the thumbnail"
