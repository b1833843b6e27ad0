"""egl_devices: list this process's EGL devices and point VTK at the GPU's.

Runs on the EGL this machine has (in CI: Mesa alone, one software device).
That the chooser picks NVIDIA over Mesa when both are listed is checked on a
GPU node by ``tests/test_gpu_render.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import pytest  # noqa: E402

from prefect_hpcviz.viz.egl_devices import (  # noqa: E402
    DEVICE_INDEX_ENV,
    EGLDevice,
    choose_egl_device,
    list_egl_devices,
    use_gpu_egl_device,
)
from tests.conftest import require  # noqa: E402

GLVND_VENDOR_DIRS = ("/etc/glvnd/egl_vendor.d", "/usr/share/glvnd/egl_vendor.d")


@pytest.fixture(scope="module")
def mesa_devices() -> tuple[EGLDevice, ...]:
    """This process's EGL devices, where Mesa is EGL's only vendor (as in CI)."""
    vendors = [p.name for d in GLVND_VENDOR_DIRS if Path(d).is_dir() for p in Path(d).glob("*.json")]
    require(
        vendors and all("mesa" in name for name in vendors) and "__EGL_VENDOR_LIBRARY_FILENAMES" not in os.environ,
        "an EGL with Mesa as its only vendor",
        f"install libegl-mesa0 (glvnd's vendor files here: {vendors or 'none'})",
    )
    return list_egl_devices()


def test_mesa_lists_its_software_device_and_vtk_counts_the_same_devices(mesa_devices):
    import pyvista as pv

    assert mesa_devices, "libEGL listed no device"
    assert [device.index for device in mesa_devices] == list(range(len(mesa_devices)))
    software = [device for device in mesa_devices if device.software]
    assert software, f"Mesa's software device is not marked software: {[str(d) for d in mesa_devices]}"
    assert all(device.cuda_device is None for device in mesa_devices)
    assert "EGL_MESA_device_software" in software[0].extensions
    assert str(software[0]).startswith(f"{software[0].index}: software (")

    plotter = pv.Plotter(off_screen=True, window_size=(16, 16))
    try:
        plotter.screenshot()
        assert plotter.render_window.GetNumberOfDevices() == len(mesa_devices)  # the same list VTK indexes
    finally:
        plotter.close()


def test_with_only_software_devices_no_choice_is_made_and_the_environment_stays(mesa_devices):
    environ: dict[str, str] = {}
    if all(device.software for device in mesa_devices):
        assert choose_egl_device(mesa_devices, environ) is None
        assert use_gpu_egl_device(environ=environ) is None
        assert environ == {}
    only_software = [device for device in mesa_devices if device.software]
    assert choose_egl_device(only_software, {}) is None


def test_an_explicit_device_index_stands_whatever_the_devices_are(mesa_devices):
    environ = {DEVICE_INDEX_ENV: "3"}
    choice = choose_egl_device(mesa_devices, environ)
    assert choice is not None and choice.index == 3 and DEVICE_INDEX_ENV in choice.reason
    assert use_gpu_egl_device(environ=environ).index == 3
    assert environ == {DEVICE_INDEX_ENV: "3"}

    gpu_listed = (EGLDevice(0, ("EGL_MESA_device_software",)), EGLDevice(1, ("EGL_NV_device_cuda",), cuda_device=0))
    assert choose_egl_device(gpu_listed, {DEVICE_INDEX_ENV: "0"}).index == 0  # even over a GPU
    assert choose_egl_device(gpu_listed, {DEVICE_INDEX_ENV: "gpu"}) is None  # not a number: left to VTK


@pytest.mark.parametrize("library", ["libEGL-does-not-exist.so.1", "libm.so.6"])
def test_a_missing_or_wrong_egl_library_means_no_choice_and_no_error(library):
    environ: dict[str, str] = {}
    assert list_egl_devices(library) == ()
    assert use_gpu_egl_device(library=library, environ=environ) is None
    assert environ == {}


def test_an_nvidia_gpu_beats_other_hardware_which_beats_software_lowest_index_among_equals():
    software = EGLDevice(0, ("EGL_MESA_device_software",))
    mesa_drm = EGLDevice(1, ("EGL_EXT_device_drm",), drm_file="/dev/dri/card0")
    gpu0 = EGLDevice(2, ("EGL_NV_device_cuda",), cuda_device=0)
    gpu1 = EGLDevice(3, ("EGL_NV_device_cuda",), cuda_device=1)

    assert choose_egl_device([software, mesa_drm, gpu0, gpu1], {}).index == 2
    assert choose_egl_device([software, mesa_drm], {}).index == 1

    choice = choose_egl_device([software, gpu0], {})
    assert choice.reason == "NVIDIA GPU, CUDA device 0; not device 0 (software)"
    first = EGLDevice(0, ("EGL_NV_device_cuda",), cuda_device=0)
    assert choose_egl_device([first, EGLDevice(1, ("EGL_MESA_device_software",))], {}).index == 0

    # NVIDIA's EGL lists a GPU that CUDA_VISIBLE_DEVICES hides, without a CUDA number (seen on an H100)
    hidden = EGLDevice(2, ("EGL_NV_device_cuda",), cuda_device=None)
    assert choose_egl_device([software, mesa_drm, hidden], {}).index == 2
