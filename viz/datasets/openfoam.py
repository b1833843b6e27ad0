"""OpenFOAM case directories, reconstructed or decomposed (``processor*`` folders).

A case is a folder holding ``system/controlDict`` (or a ``case.foam`` file
inside one, as ParaView opens it). Read with VTK's OpenFOAM reader: the
internal mesh (patches are left out) as one UnstructuredGrid per time
folder, ``volField``s as cell fields. A case with ``constant/polyMesh`` at
its top is read reconstructed; one with only ``processor*/`` folders is read
decomposed, every processor's part appended. Time ``0`` is included.

Every time folder must hold every field: a field file missing from one time
folder is an InputError naming that file. Remote cases are copied whole into
the bounded local cache (VTK's reader needs a directory).

Example:
    >>> ds = open_dataset("runs/cavity")                 # doctest: +SKIP
    >>> ds.decomposed, ds.time_values, ds.field_names()    # doctest: +SKIP
    (False, [0.0, 0.5, 1.0], ['U', 'p'])
"""

from __future__ import annotations

import os
import re

import pyvista
from vtkmodules.vtkIOParallel import vtkPOpenFOAMReader

from ..errors import InputError
from .base import Dataset
from .location import FileStamp, Location
from .multiblock import merge_blocks
from .vtk_errors import ErrorCollector, captured_vtk_output

_FIX = "check that the case was written (or copied) completely"
RECONSTRUCTED, DECOMPOSED = 1, 0
_LINE_ERROR = re.compile(r"Error reading line (\d+) of (.+?): (.*)")


def case_folder(location: Location) -> Location:
    """The case directory of a case folder or of a ``.foam`` file inside one."""
    if location.suffix == ".foam" and not location.is_dir():
        return location.sibling(".")
    return location


class OpenFoamDataset(Dataset):
    """An OpenFOAM case: the internal mesh with cell fields, per time folder."""

    format = "openfoam"

    def __init__(self, location: Location) -> None:
        self.location = case_folder(location)
        root = self.location
        if not root.child("system/controlDict").exists():
            raise InputError(root.url, "is not an OpenFOAM case (no system/controlDict)",
                             "point to the case folder (the one holding system/ and constant/)")
        self.decomposed = not root.child("constant/polyMesh").exists()
        reader, errors = self._reader()
        times = reader.GetTimeValues()
        values = [times.GetValue(i) for i in range(times.GetNumberOfTuples())] if times else []
        self.time_names = [reader.GetTimeNames().GetValue(i) for i in range(len(values))] if values else []
        if errors.messages or not values:
            problem = errors.first() or "no time folders with fields"
            raise InputError(root.url, f"cannot be read as an OpenFOAM case ({problem})", _FIX)
        self._cells = sorted(reader.GetCellArrayName(i) for i in range(reader.GetNumberOfCellArrays()))
        super().__init__(self.location, values)

    def _reader(self) -> tuple[vtkPOpenFOAMReader, ErrorCollector]:
        self._folder = folder = self.location.local_tree()
        marker = os.path.join(folder, "system", "controlDict")
        reader = vtkPOpenFOAMReader()
        errors = ErrorCollector()
        errors.attach(reader)
        reader.SetFileName(marker)
        reader.SetCaseType(DECOMPOSED if self.decomposed else RECONSTRUCTED)
        reader.SkipZeroTimeOff()
        reader.CreateCellToPointOff()
        with captured_vtk_output() as messages:
            reader.UpdateInformation()
        self._raise_file_error(messages, folder)
        for i in range(reader.GetNumberOfPatchArrays()):
            name = reader.GetPatchArrayName(i)
            reader.SetPatchArrayStatus(name, int(name == "internalMesh"))
        return reader, errors

    def stamps(self) -> list[FileStamp]:
        return self.location.stamps()

    def _field_names(self) -> tuple[list[str], list[str]]:
        return [], list(self._cells)

    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        wanted = [c for c in self._cells if fields is None or c in fields]
        self._check_field_files(step, wanted)
        reader, errors = self._reader()
        for name in self._cells:
            reader.SetCellArrayStatus(name, int(name in wanted))
        with captured_vtk_output() as messages:
            reader.UpdateTimeStep(self.time_values[step])
        self._raise_file_error(messages, self._folder)
        output = reader.GetOutputDataObject(0)
        if errors.messages or output is None:
            raise InputError(self.source, f"time {self.time_names[step]} cannot be read "
                             f"({errors.first() or 'no output'})", _FIX)
        mesh = merge_blocks(output)
        for name in wanted:
            if name not in mesh.cell_data:
                raise InputError(self.location.child(f"{self.time_names[step]}/{name}").url,
                                 "could not be read (not a volume field, or damaged)", _FIX)
        return mesh

    def _raise_file_error(self, messages: list[str], folder: str) -> None:
        """InputError for the first file VTK's reader could not parse (named as the user knows it)."""
        for message in messages:
            match = _LINE_ERROR.match(message)
            if match:
                line, path, problem = match.groups()
                relative = os.path.relpath(path, folder).replace(os.sep, "/")
                raise InputError(self.location.child(relative).url,
                                 f"truncated or not an OpenFOAM file (line {line}: {problem})", _FIX)

    def _check_field_files(self, step: int, fields: list[str]) -> None:
        """InputError naming the first field file missing from this time folder (or a processor's)."""
        time = self.time_names[step]
        folders = [self.location]
        if self.decomposed:
            folders = sorted((self.location.child(p.rsplit("/", 1)[-1]) for p in self._processors()),
                             key=lambda loc: loc.url)
        for folder in folders:
            for field in fields:
                path = folder.child(f"{time}/{field}")
                if not path.exists() and not folder.child(f"{time}/{field}.gz").exists():
                    raise InputError(path.url, f"missing: field {field!r} is absent at time {time} but present "
                                     "at other times", "rerun or copy that time folder completely, or read "
                                     "only fields present at every time")

    def _processors(self) -> list[str]:
        fs, base = self.location.fs, self.location.fs_path
        return [p for p in fs.ls(base, detail=False) if p.rstrip("/").rsplit("/", 1)[-1].startswith("processor")]
