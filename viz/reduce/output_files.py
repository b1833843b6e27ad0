"""Write one reduced mesh as the recipe's ``output`` asks: VTK XML or VTKHDF, compressed or not.

Without an ``output`` section meshes (contours, slices) are VTK XML with
zlib level 1 and volumes are raw (see :mod:`.vtk_xml` for why).

Example:
    >>> write_mesh(pv.Sphere(), "/tmp/sphere", None)                          # doctest: +SKIP
    PosixPath('/tmp/sphere.vtp')
    >>> write_mesh(pv.Sphere(), "/tmp/sphere", OutputSpec(format="vtkhdf"))  # doctest: +SKIP
    PosixPath('/tmp/sphere.vtkhdf')
"""

from __future__ import annotations

from pathlib import Path

import pyvista as pv

from .recipe_steps import OutputSpec
from .vtk_xml import write_vtk_xml


def write_mesh(mesh: pv.DataSet, stem: str | Path, output: OutputSpec | None) -> Path:
    """Write ``mesh`` to ``stem`` + the extension of the chosen format; return the path."""
    if output is None or output.format == "vtk-xml":
        if output is None or output.compression is None:
            return write_vtk_xml(mesh, stem)
        if output.compression == "none":
            return write_vtk_xml(mesh, stem, compress=False)
        return write_vtk_xml(mesh, stem, compress=True, compressor=output.compression, level=output.level)
    return write_vtkhdf(mesh, stem, level=0 if output.compression in (None, "none") else output.level)


def write_vtkhdf(mesh: pv.DataSet, stem: str | Path, *, level: int = 0) -> Path:
    """Write ``mesh`` as ``stem.vtkhdf`` (HDF5, deflate ``level`` 0-9; 0 = none).

    Raises:
        OSError: VTK could not write the file.
    """
    from vtkmodules.vtkIOHDF import vtkHDFWriter

    path = Path(f"{stem}.vtkhdf")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: no such directory {path.parent}")
    writer = vtkHDFWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(mesh)
    writer.SetCompressionLevel(int(level))
    if writer.Write() != 1 or not path.is_file():
        raise OSError(f"VTK could not write {path}")
    return path


__all__ = ["write_mesh", "write_vtkhdf"]
