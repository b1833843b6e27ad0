"""Which EGL device VTK renders on: the GPU's, when EGL also lists Mesa's software one.

VTK's EGL window renders on EGL device ``$VTK_DEFAULT_EGL_DEVICE_INDEX``, else
on device 0. When libglvnd finds both NVIDIA's and Mesa's vendor files, EGL
lists the GPU *and* Mesa's software device, in vendor order, and with Mesa
first device 0 is llvmpipe: the server works, on the CPU, much slower. This
module lists the devices of this process through libEGL (the
``EGL_EXT_device_enumeration`` / ``EGL_EXT_device_query`` extensions, read
with ctypes) and points VTK at the best one:

1. an explicit ``VTK_DEFAULT_EGL_DEVICE_INDEX`` stands, whatever it names;
2. an NVIDIA device (``EGL_NV_device_cuda``) before
3. any other hardware device, before
4. a software device (``EGL_MESA_device_software``): never chosen;

the lowest index among equals, so device 0 stays whenever it is as good as
any. Anything missing or failing (no libEGL, no extension, a call that
fails) means no choice: VTK's default stands, and nothing is raised.

Not done on purpose: matching ``CUDA_VISIBLE_DEVICES`` (Slurm's GPU binding)
to EGL's CUDA device numbers. On a one-GPU H100 node NVIDIA's EGL listed the
GPU whatever that variable said, and gave it a CUDA number only when the
variable let CUDA see it; how the numbers map on a node with several GPUs is
not verified (docs/gpu-nodes.md). So among several NVIDIA devices the lowest
index wins, as in VTK.

Example:
    >>> [str(device) for device in list_egl_devices()]   # Mesa's vendor file read first
    ['0: software (EGL_MESA_device_software EGL_EXT_device_drm_render_node)',
     '1: NVIDIA GPU, CUDA device 0, NVIDIA H100 80GB HBM3 (EGL_NV_device_cuda EGL_EXT_device_drm ...)']
    >>> use_gpu_egl_device()          # before the first render window
    EGLChoice(index=1, reason='NVIDIA GPU, CUDA device 0, NVIDIA H100 80GB HBM3; not device 0 (software)')
    >>> os.environ["VTK_DEFAULT_EGL_DEVICE_INDEX"]
    '1'
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

DEVICE_INDEX_ENV = "VTK_DEFAULT_EGL_DEVICE_INDEX"
"""What VTK's EGL window reads, when it is made, to pick its EGL device."""

LIBEGL = "libEGL.so.1"
"""libglvnd's EGL, the library VTK's wheels load."""

# From the Khronos registry (EGL/egl.h, EGL/eglext.h).
EGL_EXTENSIONS = 0x3055
EGL_VENDOR = 0x3053  # per device with EGL_EXT_device_query_name
EGL_RENDERER_EXT = 0x335F  # EGL_EXT_device_query_name
EGL_CUDA_DEVICE_NV = 0x323A  # EGL_NV_device_cuda
EGL_DRM_DEVICE_FILE_EXT = 0x3233  # EGL_EXT_device_drm

log = logging.getLogger("hpcviz.egl")


@dataclass(frozen=True)
class EGLDevice:
    """One EGL device as this process's libEGL lists it.

    Attributes:
        index: its place in EGL's list: what ``VTK_DEFAULT_EGL_DEVICE_INDEX`` names.
        extensions: the device's extension names, e.g. ``EGL_NV_device_cuda``.
        cuda_device: NVIDIA's CUDA device number for it (``EGL_NV_device_cuda``),
            else None. NVIDIA's EGL still lists a GPU that ``CUDA_VISIBLE_DEVICES``
            hides, but then gives no number for it (seen on an H100).
        drm_file: its DRM device file (``EGL_EXT_device_drm``), when the driver says.
        name: its vendor and renderer (``EGL_EXT_device_query_name``), when the driver says.
    """

    index: int
    extensions: tuple[str, ...] = ()
    cuda_device: int | None = None
    drm_file: str | None = None
    name: str = ""

    @property
    def software(self) -> bool:
        """True for Mesa's software device, which renders on the CPU (llvmpipe)."""
        return "EGL_MESA_device_software" in self.extensions

    @property
    def nvidia(self) -> bool:
        """True for a GPU that NVIDIA's EGL driver lists."""
        return "EGL_NV_device_cuda" in self.extensions or self.cuda_device is not None

    @property
    def rank(self) -> int:
        """How much VTK should prefer it: 2 an NVIDIA GPU, 1 other hardware, 0 software."""
        if self.software:
            return 0
        return 2 if self.nvidia else 1

    @property
    def kind(self) -> str:
        """``software``, ``NVIDIA GPU, CUDA device 0``, ``NVIDIA GPU`` or ``hardware``."""
        if self.software:
            return "software"
        if self.nvidia:
            return "NVIDIA GPU" + (f", CUDA device {self.cuda_device}" if self.cuda_device is not None else "")
        return "hardware"

    def __str__(self) -> str:
        details = ", ".join(part for part in (self.kind, self.drm_file, self.name) if part)
        return f"{self.index}: {details} ({' '.join(self.extensions)})"


@dataclass(frozen=True)
class EGLChoice:
    """The EGL device VTK should render on, and why.

    Attributes:
        index: the device index for ``VTK_DEFAULT_EGL_DEVICE_INDEX``.
        reason: why, in words for a log line.
    """

    index: int
    reason: str


@functools.lru_cache(maxsize=8)
def list_egl_devices(library: str = LIBEGL) -> tuple[EGLDevice, ...]:
    """The EGL devices of this process, in EGL's order (VTK's device indices).

    Args:
        library: the EGL library to ask (default: libglvnd's ``libEGL.so.1``).

    Returns:
        One ``EGLDevice`` per device; empty when the library cannot be loaded,
        lacks device enumeration, or a call fails. Never raises.

    Example:
        >>> [device.software for device in list_egl_devices()]
        [False, True]
        >>> list_egl_devices("libEGL-missing.so.1")
        ()
    """
    try:
        return _EGL(library).devices()
    except Exception as exc:  # no library, no extension, a failing call: VTK's default stands
        log.debug("no EGL devices listed through %s: %s", library, exc)
        return ()


def choose_egl_device(
    devices: Sequence[EGLDevice], environ: Mapping[str, str] = os.environ
) -> EGLChoice | None:
    """The device VTK should render on: an explicit setting, else the best hardware device.

    Args:
        devices: what ``list_egl_devices`` found.
        environ: the environment to read ``VTK_DEFAULT_EGL_DEVICE_INDEX`` from.

    Returns:
        The explicit index when ``VTK_DEFAULT_EGL_DEVICE_INDEX`` holds a
        number (even one out of range: VTK then takes its default); else the
        lowest-indexed device of the best rank (NVIDIA GPU, other hardware);
        None when nothing better than software is listed, or the variable
        holds no number: the default stands.

    Example:
        >>> mesa, gpu = EGLDevice(0, ("EGL_MESA_device_software",)), EGLDevice(1, ("EGL_NV_device_cuda",), 0)
        >>> choose_egl_device([mesa, gpu], environ={}).index
        1
        >>> choose_egl_device([mesa, gpu], environ={"VTK_DEFAULT_EGL_DEVICE_INDEX": "0"}).index
        0
        >>> choose_egl_device([mesa], environ={}) is None
        True
    """
    explicit = environ.get(DEVICE_INDEX_ENV, "").strip()
    if explicit:
        try:
            return EGLChoice(int(explicit), f"{DEVICE_INDEX_ENV}={explicit} is set")
        except ValueError:
            return None
    candidates = [device for device in devices if device.rank > 0]
    if not candidates:
        return None
    best = min(candidates, key=lambda device: (-device.rank, device.index))
    what = ", ".join(part for part in (best.kind, best.name) if part)
    if best.index == 0:
        return EGLChoice(0, f"{what}; EGL's default device")
    return EGLChoice(best.index, f"{what}; not device 0 ({devices[0].kind})")


def use_gpu_egl_device(
    logger: logging.Logger | None = None,
    *,
    library: str = LIBEGL,
    environ: MutableMapping[str, str] = os.environ,
) -> EGLChoice | None:
    """Point VTK's EGL windows at the GPU when EGL's device 0 is a worse one.

    Call it before the process makes its first render window. It sets
    ``VTK_DEFAULT_EGL_DEVICE_INDEX`` only when that is unset and the choice is
    not device 0, and logs that once (a later call sees the variable set).

    Args:
        logger: where to say what was chosen (default: ``hpcviz.egl``).
        library: the EGL library to ask (default: ``libEGL.so.1``).
        environ: the environment VTK reads (default: this process's).

    Returns:
        The choice (an explicit setting included), or None: VTK's default stands.

    Example:
        >>> use_gpu_egl_device(log)
        EGLChoice(index=1, reason='NVIDIA GPU, CUDA device 0, NVIDIA H100 80GB HBM3; not device 0 (software)')
        >>> use_gpu_egl_device(library="libEGL-missing.so.1", environ={}) is None
        True
    """
    if environ.get(DEVICE_INDEX_ENV, "").strip():  # set by the user, or by an earlier call: it stands
        return choose_egl_device((), environ)
    devices = list_egl_devices(library)
    choice = choose_egl_device(devices, environ)
    if choice is not None and choice.index != 0:
        environ[DEVICE_INDEX_ENV] = str(choice.index)
        (logger or log).info(
            "renders on EGL device %d of %d: %s (set %s=%d)",
            choice.index, len(devices), choice.reason, DEVICE_INDEX_ENV, choice.index,
        )  # fmt: skip
    return choice


class _EGL:
    """The few EGL entry points that list devices, loaded from ``library`` with ctypes."""

    def __init__(self, library: str) -> None:
        egl = ctypes.CDLL(library)
        egl.eglQueryString.restype = ctypes.c_char_p
        egl.eglQueryString.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        egl.eglGetProcAddress.restype = ctypes.c_void_p
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        client = (egl.eglQueryString(None, EGL_EXTENSIONS) or b"").decode(errors="replace").split()
        if "EGL_EXT_device_enumeration" not in client and "EGL_EXT_device_base" not in client:
            raise OSError(f"{library} does not offer EGL_EXT_device_enumeration")
        self.query_devices = self._function(
            egl, "eglQueryDevicesEXT", ctypes.c_uint32,
            ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int32),
        )  # fmt: skip
        self.query_string = self._function(
            egl, "eglQueryDeviceStringEXT", ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int32
        )
        self.query_attrib = self._function(
            egl, "eglQueryDeviceAttribEXT", ctypes.c_uint32,
            ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_ssize_t),
        )  # fmt: skip

    @staticmethod
    def _function(egl: ctypes.CDLL, name: str, restype, *argtypes):
        address = egl.eglGetProcAddress(name.encode())
        if not address:
            raise OSError(f"EGL has no {name}")
        return ctypes.CFUNCTYPE(restype, *argtypes)(address)

    def devices(self) -> tuple[EGLDevice, ...]:
        count = ctypes.c_int32(0)
        if not self.query_devices(0, None, ctypes.byref(count)):
            raise OSError("eglQueryDevicesEXT failed to count the devices")
        handles = (ctypes.c_void_p * max(count.value, 1))()
        if not self.query_devices(count.value, handles, ctypes.byref(count)):
            raise OSError("eglQueryDevicesEXT failed to list the devices")
        return tuple(self._device(index, handles[index]) for index in range(count.value))

    def _device(self, index: int, handle: int | None) -> EGLDevice:
        extensions = tuple(self._string(handle, EGL_EXTENSIONS).split())
        cuda_device = None
        if "EGL_NV_device_cuda" in extensions:
            value = ctypes.c_ssize_t(-1)
            if self.query_attrib(handle, EGL_CUDA_DEVICE_NV, ctypes.byref(value)) and value.value >= 0:
                cuda_device = value.value
        drm_file = self._string(handle, EGL_DRM_DEVICE_FILE_EXT) if "EGL_EXT_device_drm" in extensions else ""
        name = ""
        if "EGL_EXT_device_query_name" in extensions:
            vendor, renderer = self._string(handle, EGL_VENDOR), self._string(handle, EGL_RENDERER_EXT)
            name = renderer if renderer.startswith(vendor) else f"{vendor} {renderer}".strip()
        return EGLDevice(index, extensions, cuda_device, drm_file or None, name)

    def _string(self, handle: int | None, name: int) -> str:
        value = self.query_string(handle, name)
        return value.decode(errors="replace") if value else ""
