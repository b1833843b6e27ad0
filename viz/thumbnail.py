"""A PNG of the view an app opens with, rendered offscreen.

Example:
    >>> png = render_thumbnail("out/reduced/3f2a9c0d41b7e8aa", size=(640, 400))
    >>> Path("thumbnail.png").write_bytes(png)
"""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import io  # noqa: E402
from typing import Any  # noqa: E402

import pyvista as pv  # noqa: E402
from PIL import Image  # noqa: E402

from prefect_hpcviz.viz.egl_devices import use_gpu_egl_device  # noqa: E402
from prefect_hpcviz.viz.scene import build_scene, load_view_data  # noqa: E402
from prefect_hpcviz.viz.view_preset import ViewPreset, apply_view  # noqa: E402


def render_thumbnail(
    data: Any,
    *,
    size: tuple[int, int] = (640, 400),
    step: int = 0,
    field: str | None = None,
    cmap: str = "viridis",
    view: Any = None,
    annotations: bool = True,
) -> bytes:
    """Render the first view of a dataset to PNG bytes, offscreen.

    The scene is the one ``build_scene`` draws, so the thumbnail shows what a
    user sees when the app opens.

    Args:
        data: a ``ReducedDataset`` or ``Dataset``, or a path ``load_view_data``
            opens (a reduced directory or any dataset).
        size: (width, height) in pixels.
        step: time step index.
        field: field to colour and contour by (default: the first scalar).
        cmap: colormap name.
        view: a ``ViewPreset`` (or its dict) applied after the above, so the
            thumbnail shows what the app opens with the same preset.
        annotations: draw the time label and the colour legend (sized to fit
            the picture); False for the 3D scene alone.

    Returns:
        The PNG file's bytes.

    Raises:
        InputError: the path, field or step is not valid.

    Example:
        >>> png = render_thumbnail(reduced, size=(320, 200), step=2)
        >>> png[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    if isinstance(data, (str, os.PathLike)):
        data = load_view_data(data)
    width, height = (int(v) for v in size)
    use_gpu_egl_device()  # Dask workers and flows render here: the GPU's EGL device, not Mesa's
    plotter = pv.Plotter(off_screen=True, window_size=(width, height))
    try:
        scene = build_scene(plotter, data, step=step, field=field, cmap=cmap)
        if view is not None:
            preset = view if isinstance(view, ViewPreset) else ViewPreset.from_dict(view)
            apply_view(scene, preset)
        scene.annotations.set_visible(annotations)
        pixels = plotter.screenshot(return_img=True, transparent_background=False)
    finally:
        plotter.close()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", optimize=False)
    return out.getvalue()
