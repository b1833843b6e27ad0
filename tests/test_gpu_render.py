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

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


EGL_VENDOR_DIRS = (
    "/etc/glvnd/egl_vendor.d",
    "/usr/share/glvnd/egl_vendor.d",
    "/usr/local/share/glvnd/egl_vendor.d",
    "/usr/local/nvidia/share/glvnd/egl_vendor.d",
)

# One child process per case: libglvnd reads __EGL_VENDOR_LIBRARY_FILENAMES once, when it loads.
RENDER_CHILD = """
import json, logging, os, sys
os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
import pyvista as pv
from prefect_hpcviz.viz.opengl_info import opengl_info
ours, data, result = sys.argv[1] == "ours", sys.argv[2], {}
if ours:  # what a Dask worker does: render_thumbnail points VTK at the GPU itself
    from prefect_hpcviz.viz.egl_devices import list_egl_devices
    from prefect_hpcviz.viz.thumbnail import render_thumbnail
    result["thumbnail_bytes"] = len(render_thumbnail(data, size=(320, 200)))
    result["devices"] = [[d.index, d.software, d.cuda_device, str(d)] for d in list_egl_devices()]
plotter = pv.Plotter(off_screen=True, window_size=(64, 64))
plotter.screenshot()
info = opengl_info(plotter.render_window)
plotter.close()
result.update(index=os.environ.get("VTK_DEFAULT_EGL_DEVICE_INDEX"), info=str(info))
result.update(nvidia=info.nvidia, software=info.software)
print("RESULT " + json.dumps(result))
"""


def egl_vendor_file(vendor: str) -> Path | None:
    """glvnd's vendor file for ``vendor`` (``mesa``, ``nvidia``), or ``$HPCVIZ_TEST_<VENDOR>_EGL_VENDOR``."""
    named = os.environ.get(f"HPCVIZ_TEST_{vendor.upper()}_EGL_VENDOR")
    if named:
        return Path(named) if Path(named).is_file() else None
    found = (path for folder in EGL_VENDOR_DIRS for path in sorted(Path(folder).glob(f"*{vendor}*.json")))
    return next(found, None)


def render_in_child(mode: str, vendors: str, data: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VTK_DEFAULT_EGL_DEVICE_INDEX"}
    env["__EGL_VENDOR_LIBRARY_FILENAMES"] = vendors
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, "-c", RENDER_CHILD, mode, str(data)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"the {mode} child failed:\n{done.stdout}\n{done.stderr}"
    print(f"{mode} child's log: {done.stderr.strip()}")  # our log line, where a choice was made
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return {**json.loads(line.removeprefix("RESULT ")), "log": done.stderr}


def test_with_mesa_listed_first_our_choice_renders_on_nvidia_where_vtk_alone_takes_llvmpipe(gpu, small_reduced):
    mesa, nvidia = egl_vendor_file("mesa"), egl_vendor_file("nvidia")
    require(mesa is not None, "Mesa's EGL vendor file", "install libegl-mesa0, or set HPCVIZ_TEST_MESA_EGL_VENDOR")
    require(nvidia is not None, "NVIDIA's EGL vendor file", "set HPCVIZ_TEST_NVIDIA_EGL_VENDOR to 10_nvidia.json")
    mesa_first = f"{mesa}:{nvidia}"

    plain = render_in_child("plain", mesa_first, small_reduced.path)
    ours = render_in_child("ours", mesa_first, small_reduced.path)
    print(f"{gpu}\nEGL devices: {ours['devices']}\nVTK alone: {plain['info']}\nours: {ours['info']}")

    assert plain["software"] and plain["index"] is None, f"Mesa first should give llvmpipe: {plain}"
    software = [index for index, is_software, _, _ in ours["devices"] if is_software]
    cuda = [index for index, _, cuda_device, _ in ours["devices"] if cuda_device is not None]
    assert software and cuda and software[0] < cuda[0], f"expected Mesa's device before the GPU: {ours['devices']}"
    assert ours["index"] == str(cuda[0]), f"the chooser did not pick the GPU's device: {ours}"
    assert f"renders on EGL device {cuda[0]} of {len(ours['devices'])}: NVIDIA GPU" in ours["log"]
    assert ours["nvidia"] and not ours["software"], f"still not on the GPU: {ours}"
    assert ours["thumbnail_bytes"] > 1000
