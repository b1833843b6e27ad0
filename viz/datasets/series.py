"""ParaView .pvd collections: one VTK XML file (or partitioned .pvtu/.pvti) per time step (and part).

Time values come from the ``timestep`` attribute of each ``<DataSet>``; file
names are relative to the .pvd's folder. Several parts at one time step are
merged into one mesh when read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pyvista

from ..errors import InputError
from .base import Dataset
from .location import FileStamp, Location
from .partitioned import PARTITIONED_TYPES, PartitionedDataset
from .vtk_xml import VTK_XML_READERS, read_vtk_xml, vtk_xml_field_names

_FIX = "re-export it, or check the path"


@dataclass(frozen=True)
class SeriesPiece:
    """One ``<DataSet timestep=.. part=.. file=..>`` entry of a .pvd file."""

    time: float
    part: int
    location: Location
    format: str


def parse_pvd(location: Location) -> list[SeriesPiece]:
    """Parse a .pvd file; raise InputError for bad XML, bad entries or missing files.

    Example:
        >>> pieces = parse_pvd(resolve_location("sim/simulation.pvd"))  # doctest: +SKIP
        >>> [p.time for p in pieces][:3]                                 # doctest: +SKIP
        [0.0, 0.25, 0.5]
    """
    with location.open() as f:
        text = f.read()
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(location.url, f"truncated or not a .pvd (XML) file ({exc})", _FIX) from None
    if root.tag != "VTKFile" or root.get("type") != "Collection":
        raise InputError(location.url, "not a ParaView collection (expected <VTKFile type=\"Collection\">)",
                         _FIX)
    entries = root.findall("./Collection/DataSet")
    if not entries:
        raise InputError(location.url, "the collection lists no <DataSet> files",
                         "re-export it with at least one time step")
    pieces = []
    for index, entry in enumerate(entries):
        file = entry.get("file")
        if not file:
            raise InputError(location.url, f"<DataSet> number {index} has no file attribute", _FIX)
        try:
            time = float(entry.get("timestep", index))
            part = int(entry.get("part", 0))
        except ValueError as exc:
            raise InputError(location.url, f"<DataSet file={file!r}> has a bad timestep/part ({exc})",
                             _FIX) from None
        piece = location.sibling(file)
        fmt = piece.suffix.lstrip(".")
        if fmt not in VTK_XML_READERS and fmt not in PARTITIONED_TYPES:
            supported = ", ".join(f".{k}" for k in [*VTK_XML_READERS, *PARTITIONED_TYPES])
            raise InputError(piece.url, f"listed in {location.name} but is not a VTK XML file "
                             f"this reader handles (supported: {supported})", "convert it, or list other files")
        piece.require(referenced_by=location.url)
        pieces.append(SeriesPiece(time, part, piece, fmt))
    return pieces


class VtkSeriesDataset(Dataset):
    """A .pvd time series; time step i is every piece at the i-th distinct timestep.

    Example:
        >>> ds = open_dataset("sim/simulation.pvd")  # doctest: +SKIP
        >>> ds.time_values                             # doctest: +SKIP
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    """

    format = "pvd"

    def __init__(self, location: Location) -> None:
        pieces = parse_pvd(location)
        times = sorted({p.time for p in pieces})
        self._steps: list[list[SeriesPiece]] = [
            sorted((p for p in pieces if p.time == t), key=lambda p: p.part) for t in times
        ]
        self._names: tuple[list[str], list[str]] | None = None
        super().__init__(location, times)

    def pieces(self, step: int) -> list[SeriesPiece]:
        """The files that make up time step ``step``."""
        return list(self._steps[step])

    def stamps(self) -> list[FileStamp]:
        seen: set[str] = set()
        stamps = [self.location.stamp()]
        for step in self._steps:
            for piece in step:
                if piece.location.url not in seen:
                    seen.add(piece.location.url)
                    stamps.extend(_stamps(piece))
        return stamps

    def _field_names(self) -> tuple[list[str], list[str]]:
        if self._names is None:
            piece = self._steps[0][0]
            if piece.format in PARTITIONED_TYPES:
                self._names = PartitionedDataset(piece.location, piece.format)._field_names()
            else:
                self._names = vtk_xml_field_names(piece.location.local_path(), piece.format, piece.location.url)
        return self._names

    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        meshes = [self._read_piece(p, step, fields) for p in self._steps[step]]
        if len(meshes) == 1:
            return meshes[0]
        return pyvista.merge(meshes, merge_points=False)

    @property
    def is_volume(self) -> bool:  # type: ignore[override]
        """True when every time step is one .vti file (read chunk by chunk by :meth:`volume`)."""
        return all(len(step) == 1 and step[0].format == "vti" for step in self._steps)

    def _volume(self, step: int, field: str, chunk_bytes: int | None):
        from .vti_volume import vti_volume

        piece = self._steps[step][0]
        path = piece.location.local_path()
        points, cells = vtk_xml_field_names(path, piece.format, piece.location.url)
        if field not in points:
            raise InputError(piece.location.url, f"has no point field {field!r}, which the first time step of "
                             f"{self.location.name} has (this is time step {step}; it has: "
                             f"{', '.join(sorted(points + cells)) or 'none'})",
                             "re-export that time step, or drop the field from the recipe's 'fields'")
        return vti_volume(path, field, name=piece.location.url, chunk_bytes=chunk_bytes)

    def _read_piece(self, piece: SeriesPiece, step: int, fields: list[str] | None) -> pyvista.DataSet:
        """Read one file; InputError naming it when it lacks a field the first time step has."""
        if piece.format in PARTITIONED_TYPES:  # a .pvtu/.pvti per time step: read with its pieces
            mesh = PartitionedDataset(piece.location, piece.format)._read(0, fields)
        else:
            mesh = read_vtk_xml(piece.location.local_path(), piece.format, name=piece.location.url, fields=fields)
        points, cells = self._field_names()
        for association, names, data in (("point", points, mesh.point_data), ("cell", cells, mesh.cell_data)):
            for name in names:
                if (fields is None or name in fields) and name not in data:
                    raise InputError(piece.location.url, f"has no {association} field {name!r}, which the first "
                                     f"time step of {self.location.name} has (this is time step {step})",
                                     "re-export that time step, or read only fields present in every step")
        return mesh


def _stamps(piece: SeriesPiece) -> list[FileStamp]:
    """The stamps of a series entry: its file, and the pieces of a partitioned file."""
    if piece.format in PARTITIONED_TYPES:
        return PartitionedDataset(piece.location, piece.format).stamps()
    return [piece.location.stamp()]
