"""Exodus II files (.exo, .e, .ex2): finite-element meshes with nodal and element results.

Read with VTK's ``vtkExodusIIReader``; every element block is merged into one
UnstructuredGrid per time step (nodal variables become point fields, element
variables cell fields). Remote files go through the bounded local cache
(Exodus is a whole-file format for VTK).

Example:
    >>> ds = open_dataset("impact.exo")             # doctest: +SKIP
    >>> ds.field_names(), ds.time_values[:3]          # doctest: +SKIP
    (['displacement', 'stress'], [0.0, 0.001, 0.002])
"""

from __future__ import annotations

import pyvista
from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline
from vtkmodules.vtkIOExodus import vtkExodusIIReader

from ..errors import InputError
from .base import Dataset
from .location import FileStamp, Location
from .multiblock import merge_blocks
from .vtk_errors import ErrorCollector

_FIX = "re-export it, or check that the file was copied completely"
_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF")


def _reader(path: str, name: str) -> tuple[vtkExodusIIReader, ErrorCollector]:
    """An Exodus reader with its metadata read; InputError for a file that is not Exodus II."""
    with open(path, "rb") as f:
        if not f.read(4).startswith(_NETCDF_MAGIC):
            raise InputError(name, "truncated or not an Exodus II file (no NetCDF/HDF5 header)", _FIX)
    reader = vtkExodusIIReader()
    errors = ErrorCollector()
    errors.attach(reader)
    reader.SetFileName(path)
    reader.GenerateObjectIdCellArrayOff()
    reader.GenerateGlobalElementIdArrayOff()
    reader.GenerateGlobalNodeIdArrayOff()
    reader.UpdateInformation()
    if errors.messages or reader.GetNumberOfElementBlockArrays() == 0:
        raise InputError(name, f"truncated or not an Exodus II file ({errors.first() or 'no element blocks'})",
                         _FIX)
    return reader, errors


class ExodusDataset(Dataset):
    """An Exodus II file: element blocks merged into one UnstructuredGrid per time step."""

    format = "exodus"

    def __init__(self, location: Location) -> None:
        self.location = location
        reader, _errors = _reader(location.local_path(), location.url)
        self._points = [reader.GetPointResultArrayName(i) for i in range(reader.GetNumberOfPointResultArrays())]
        self._cells = [reader.GetElementResultArrayName(i) for i in range(reader.GetNumberOfElementResultArrays())]
        info = reader.GetOutputInformation(0)
        times = info.Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS()) if info.Has(
            vtkStreamingDemandDrivenPipeline.TIME_STEPS()) else None
        super().__init__(location, list(times) if times else [0.0])

    def stamps(self) -> list[FileStamp]:
        return [self.location.stamp()]

    def _field_names(self) -> tuple[list[str], list[str]]:
        return list(self._points), list(self._cells)

    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        reader, errors = _reader(self.location.local_path(), self.source)
        for kind, names in ((vtkExodusIIReader.NODAL, self._points), (vtkExodusIIReader.ELEM_BLOCK, self._cells)):
            for name in names:
                reader.SetObjectArrayStatus(kind, name, int(fields is None or name in fields))
        reader.SetAllArrayStatus(vtkExodusIIReader.ELEM_BLOCK_ELEM_CONN, 1)
        reader.UpdateTimeStep(self.time_values[step])
        output = reader.GetOutputDataObject(0)
        if errors.messages or output is None:
            raise InputError(self.source, f"truncated or not an Exodus II file ({errors.first() or 'no output'})",
                             _FIX)
        mesh = merge_blocks(output)
        missing = [n for n in self._points if (fields is None or n in fields) and n not in mesh.point_data]
        missing += [n for n in self._cells if (fields is None or n in fields) and n not in mesh.cell_data]
        if missing or errors.messages:
            problem = errors.first() or f"no values for {', '.join(missing)}"
            raise InputError(self.source, f"time step {step} cannot be read ({problem})", _FIX)
        return mesh
