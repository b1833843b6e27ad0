"""Single VTK XML files (.vti, .vtu, .vtp, .vts), read with VTK's own readers.

VTK's readers report problems by printing, not by raising. Here every error
event of the reader, its XML parser and its executive goes to a collector
(nothing is printed) and any error, a missing array or a short output becomes
an InputError naming the file.
"""

from __future__ import annotations

import os
import re

import pyvista
from vtkmodules.vtkIOXML import (
    vtkXMLImageDataReader,
    vtkXMLPolyDataReader,
    vtkXMLStructuredGridReader,
    vtkXMLUnstructuredGridReader,
)

from ..errors import InputError
from .base import Dataset
from .location import FileStamp, Location
from .vtk_errors import ErrorCollector

VTK_XML_READERS = {
    "vti": vtkXMLImageDataReader,
    "vtu": vtkXMLUnstructuredGridReader,
    "vtp": vtkXMLPolyDataReader,
    "vts": vtkXMLStructuredGridReader,
}
VTK_XML_KINDS = {"vti": "ImageData", "vtu": "UnstructuredGrid", "vtp": "PolyData", "vts": "StructuredGrid"}
_FIX = "re-export it, or check the path"
_TAIL = b"</VTKFile>"


def _new_reader(path: str, fmt: str, name: str):
    """(reader, its error collector) for ``path``, header read (UpdateInformation)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(max(0, size - 256))
            tail = f.read()
    except FileNotFoundError:
        raise InputError(name, "no such file or directory", "check the path") from None
    except OSError as exc:
        raise InputError(name, f"cannot be read ({exc.strerror or exc})",
                         "check the path and its permissions") from None
    kind = VTK_XML_KINDS[fmt]
    if _TAIL not in tail:
        raise InputError(name, f"truncated or not a VTK XML file (a complete .{fmt} file ends with "
                         "</VTKFile>)", _FIX)
    problem = _appended_data_problem(path, size)
    if problem:
        raise InputError(name, f"truncated or not a VTK XML file ({problem})", _FIX)
    reader = VTK_XML_READERS[fmt]()
    if not reader.CanReadFile(path):
        raise InputError(name, f"truncated or not a VTK XML file (expected a VTK XML {kind} file)", _FIX)
    errors = ErrorCollector()
    errors.attach(reader)
    reader.SetFileName(path)
    reader.UpdateInformation()
    if errors.messages:
        raise InputError(name, f"truncated or not a VTK XML file ({errors.first()})", _FIX)
    return reader, errors


def _appended_data_problem(path: str, size: int) -> str:
    """Check that raw appended data reaches as far as the header says ('' when fine).

    VTK reads missing appended bytes without complaint, so a file that lost
    bytes in the middle would load as garbage. The last array (largest
    offset) must end inside the file; its extent is known from its size
    header (uncompressed) or its block table (compressed).
    """
    head = b""
    with open(path, "rb") as f:
        while b"<AppendedData" not in head:
            chunk = f.read(1 << 16)
            if not chunk or len(head) > (64 << 20):
                return ""
            head += chunk
        cut = head.index(b"<AppendedData")
        tag_end = head.find(b">", cut)
        underscore = head.find(b"_", tag_end)
        if tag_end < 0 or underscore < 0:
            return "the appended data section is cut short"
        appended_tag = head[cut:tag_end]
        if b'encoding="base64"' in appended_tag:
            return ""
        xml = head[:cut]
        start = underscore + 1
        offsets = [int(o) for o in re.findall(rb'format="appended"[^>]*?offset="(\d+)"', xml)]
        offsets += [int(o) for o in re.findall(rb'offset="(\d+)"[^>]*?format="appended"', xml)]
        if not offsets:
            return ""
        word = 8 if re.search(rb'header_type="UInt64"', xml) else 4
        order = "big" if re.search(rb'byte_order="BigEndian"', xml) else "little"
        compressed = re.search(rb'compressor="\w+', xml) is not None
        last = max(offsets)
        f.seek(start + last)
        header = f.read(3 * word if compressed else word)
        if len(header) < word:
            return f"appended data ends at byte {size}, before the array at offset {last}"
        if compressed:
            blocks = int.from_bytes(header[:word], order)
            if start + last + (3 + blocks) * word > size:
                return f"the appended arrays run past the end of the file ({size} bytes)"
            sizes = f.read(blocks * word)
            if len(header) < 3 * word or len(sizes) < blocks * word:
                return f"appended data ends at byte {size}, inside the array at offset {last}"
            body = sum(int.from_bytes(sizes[i:i + word], order) for i in range(0, len(sizes), word))
            end = start + last + 3 * word + blocks * word + body
        else:
            end = start + last + word + int.from_bytes(header, order)
    if end > size:
        return f"the appended arrays run past the end of the file ({end} bytes needed, {size} present)"
    return ""


def _array_names(reader) -> tuple[list[str], list[str]]:
    points = [reader.GetPointArrayName(i) for i in range(reader.GetNumberOfPointArrays())]
    cells = [reader.GetCellArrayName(i) for i in range(reader.GetNumberOfCellArrays())]
    return points, cells


def vtk_xml_field_names(path: str, fmt: str, name: str | None = None) -> tuple[list[str], list[str]]:
    """(point array names, cell array names) from a VTK XML file's header only.

    Example:
        >>> vtk_xml_field_names("out/a.vti", "vti")  # doctest: +SKIP
        (['pressure', 'velocity'], [])
    """
    return _array_names(_new_reader(path, fmt, name or path)[0])


def read_vtk_xml(path: str, fmt: str, *, name: str | None = None,
                 fields: list[str] | None = None) -> pyvista.DataSet:
    """Read one VTK XML file into a pyvista dataset, or raise InputError.

    Args:
        path: a local file path.
        fmt: "vti", "vtu", "vtp" or "vts" (chooses the reader).
        name: how to name the file in errors (e.g. its URL); defaults to ``path``.
        fields: read only these arrays (names that are not in the file are ignored).

    Example:
        >>> grid = read_vtk_xml("out/a.vti", "vti", fields=["pressure"])  # doctest: +SKIP
    """
    name = name or path
    reader, errors = _new_reader(path, fmt, name)
    points, cells = _array_names(reader)
    if fields is not None:
        for array in points:
            reader.SetPointArrayStatus(array, int(array in fields))
        for array in cells:
            reader.SetCellArrayStatus(array, int(array in fields))
        points = [a for a in points if a in fields]
        cells = [a for a in cells if a in fields]
    reader.Update()
    output = reader.GetOutputDataObject(0)
    if errors.messages or output is None:
        raise InputError(name, f"truncated or not a VTK XML file ({errors.first() or 'no output'})", _FIX)
    missing = [a for a in points if output.GetPointData().GetAbstractArray(a) is None]
    missing += [a for a in cells if output.GetCellData().GetAbstractArray(a) is None]
    if missing:
        raise InputError(name, f"truncated or not a VTK XML file (arrays {', '.join(missing)} "
                         "could not be read)", _FIX)
    if fmt in ("vti", "vts"):
        info = reader.GetOutputInformation(0)
        extent = info.Get(reader.GetExecutive().WHOLE_EXTENT())
        expected = 1
        for axis in range(3):
            expected *= max(0, extent[2 * axis + 1] - extent[2 * axis] + 1)
        if output.GetNumberOfPoints() != expected:
            raise InputError(name, f"truncated or not a VTK XML file ({output.GetNumberOfPoints()} points "
                             f"read, {expected} declared)", _FIX)
    result = output.NewInstance()
    result.ShallowCopy(output)  # detach from the reader's pipeline; no data copied
    return pyvista.wrap(result)


class VtkFileDataset(Dataset):
    """One VTK XML file: a single time step at t = 0.

    Example:
        >>> ds = open_dataset("mesh.vtu")   # doctest: +SKIP
        >>> ds.format, ds.time_values        # doctest: +SKIP
        ('vtu', [0.0])
    """

    def __init__(self, location: Location, fmt: str) -> None:
        self.format = fmt
        super().__init__(location, [0.0])
        self._names: tuple[list[str], list[str]] | None = None

    def stamps(self) -> list[FileStamp]:
        return [self.location.stamp()]

    def _field_names(self) -> tuple[list[str], list[str]]:
        if self._names is None:
            self._names = vtk_xml_field_names(self.location.local_path(), self.format, self.source)
        return self._names

    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        return read_vtk_xml(self.location.local_path(), self.format, name=self.source, fields=fields)

    @property
    def is_volume(self) -> bool:  # type: ignore[override]
        return self.format == "vti"

    def _volume(self, step: int, field: str, chunk_bytes: int | None):
        from .vti_volume import vti_volume

        return vti_volume(self.location.local_path(), field, name=self.source, chunk_bytes=chunk_bytes)
