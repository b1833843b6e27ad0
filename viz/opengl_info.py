"""Which OpenGL a render window draws with: on the GPU, or in software.

A viz server on a GPU node should render through NVIDIA's EGL driver; when
the driver's EGL library cannot be found, the same VTK wheel silently falls
back to Mesa's CPU rasterizer (llvmpipe), which works, only slower. The
OpenGL strings of the window's context tell the two apart.

Example:
    >>> plotter = pv.Plotter(off_screen=True, window_size=(64, 64))
    >>> _ = plotter.screenshot()          # the context exists once it rendered
    >>> info = opengl_info(plotter.render_window)
    >>> info.renderer, info.software
    ('NVIDIA H100 80GB HBM3/PCIe/SSE2', False)
    >>> str(info)
    'NVIDIA H100 80GB HBM3/PCIe/SSE2, OpenGL 4.6.0 NVIDIA 580.159.04 (EGL: NVIDIA)'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InputError

SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software rasterizer")
"""Words in GL_RENDERER that mean Mesa draws on the CPU."""


@dataclass(frozen=True)
class OpenGLInfo:
    """The strings an OpenGL context reports about itself.

    Attributes:
        vendor: GL_VENDOR, e.g. ``NVIDIA Corporation`` or ``Mesa/X.org``.
        renderer: GL_RENDERER, e.g. ``NVIDIA H100 80GB HBM3/PCIe/SSE2`` or
            ``llvmpipe (LLVM 15.0.6, 256 bits)``.
        version: GL_VERSION, which names the driver's version.
        egl_vendor: EGL_VENDOR for an EGL window (``NVIDIA``, ``Mesa Project``),
            else empty.
    """

    vendor: str
    renderer: str
    version: str
    egl_vendor: str = ""

    @property
    def software(self) -> bool:
        """True when Mesa rasterizes on the CPU (llvmpipe and its kin)."""
        return any(word in self.renderer.lower() for word in SOFTWARE_RENDERERS)

    @property
    def nvidia(self) -> bool:
        """True when NVIDIA's driver made the context."""
        return "NVIDIA" in f"{self.vendor} {self.renderer}".upper()

    def __str__(self) -> str:
        egl = f" (EGL: {self.egl_vendor})" if self.egl_vendor else ""
        return f"{self.renderer}, OpenGL {self.version}{egl}"


def opengl_info(render_window: Any) -> OpenGLInfo:
    """Read the OpenGL strings of a VTK render window that has rendered once.

    Args:
        render_window: a ``vtkOpenGLRenderWindow`` (pyvista:
            ``plotter.render_window``) after its first ``Render()``.

    Returns:
        The context's vendor, renderer, version and EGL vendor.

    Raises:
        InputError: the window has no OpenGL context yet.

    Example:
        >>> info = opengl_info(plotter.render_window)
        >>> info.software
        False
    """
    strings = _report_strings(render_window.ReportCapabilities())
    if not strings.get("OpenGL renderer"):
        raise InputError(
            f"render window {render_window.GetClassName()}",
            "has no OpenGL context yet",
            "render it once first (pyvista: plotter.screenshot(), or plotter.render_window.Render())",
        )
    return OpenGLInfo(
        vendor=strings.get("OpenGL vendor", ""),
        renderer=strings["OpenGL renderer"],
        version=strings.get("OpenGL version", ""),
        egl_vendor=strings.get("EGL vendor", ""),
    )


def _report_strings(report: str) -> dict[str, str]:
    """``{"OpenGL renderer": "...", ...}`` from the ``NAME string:  VALUE`` lines of a report."""
    strings = {}
    for line in report.splitlines():
        name, sep, value = line.partition(" string:")
        if sep and name.strip():
            strings[name.strip()] = value.strip()
    return strings
