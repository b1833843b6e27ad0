"""Steps that change a layer (a contour or slice surface): decimate and clip.

Both run on the merged layer mesh, with VTK's own filters, in whichever
engine path made the layer (chunked volume or whole mesh).

Example:
    >>> sphere = pv.Sphere(theta_resolution=60, phi_resolution=60)
    >>> decimate(sphere, 1000).n_cells <= 1100
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyvista as pv


def decimate(mesh: pv.PolyData, triangles: int) -> pv.PolyData:
    """``mesh`` simplified to about ``triangles`` triangles (vtkQuadricDecimation); as is when already smaller."""
    surface = mesh.triangulate() if not mesh.is_all_triangles else mesh
    if surface.n_cells <= triangles:
        return surface
    return surface.decimate(1.0 - triangles / surface.n_cells)


def clip(mesh: pv.DataSet, normal: Sequence[float], origin: Sequence[float], invert: bool = False) -> pv.DataSet:
    """The part of ``mesh`` behind the plane (the side ``normal`` points to is removed; ``invert`` keeps it)."""
    return mesh.clip(normal=tuple(float(v) for v in normal), origin=tuple(float(v) for v in origin),
                     invert=not invert)


def apply_layer_step(mesh: pv.DataSet, kind: str, spec: Any, centre: Sequence[float]) -> pv.DataSet:
    """Apply a decimate or clip step's options to ``mesh``; a clip without origin cuts through ``centre``."""
    if kind == "decimate":
        return decimate(mesh, spec.triangles)
    return clip(mesh, spec.normal, spec.origin if spec.origin is not None else centre, spec.invert)


__all__ = ["apply_layer_step", "clip", "decimate"]
