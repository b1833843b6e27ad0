"""Multi-block readers' output (Exodus element blocks, OpenFOAM regions) as one mesh."""

from __future__ import annotations

import pyvista
from vtkmodules.vtkFiltersCore import vtkAppendFilter


def merge_blocks(output) -> pyvista.UnstructuredGrid:
    """Append every leaf block of a VTK composite dataset into one unstructured grid.

    Field data (reader metadata such as time values) is dropped: it describes
    the file, not the mesh.

    Example:
        >>> blocks = pyvista.MultiBlock([pyvista.Cube(), pyvista.Sphere()])
        >>> merge_blocks(blocks).n_cells == blocks[0].n_cells + blocks[1].n_cells
        True
    """
    append = vtkAppendFilter()
    iterator = output.NewIterator()
    iterator.InitTraversal()
    while not iterator.IsDoneWithTraversal():
        append.AddInputData(iterator.GetCurrentDataObject())
        iterator.GoToNextItem()
    append.Update()
    mesh = pyvista.wrap(append.GetOutput())
    mesh.field_data.clear()
    return mesh
