"""Partitioned VTK XML files (.pvti, .pvtu, .pvtp): a small header listing piece files.

Parallel writers (``vtkXMLPImageDataWriter``, ParaView's "Save Data" in
parallel, MPI codes) write one piece file per rank and a header naming them.
Each piece is read with VTK's serial reader (so a truncated piece is refused
like any VTK XML file) and then assembled: image pieces are copied into the
whole extent, mesh pieces are appended. Pieces are found relative to the
header, locally or behind the same fsspec URL. Every piece listed must exist
and hold every field the header declares.

Example:
    >>> ds = open_dataset("out/step_0010.pvti")          # doctest: +SKIP
    >>> [p.name for p in ds.pieces], ds.read(0).dimensions  # doctest: +SKIP
    (['step_0010_0.vti', 'step_0010_1.vti'], (64, 64, 64))
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import pyvista

from ..errors import InputError
from .base import Dataset
from .location import FileStamp, Location
from .volume import ChunkedVolume
from .vtk_xml import read_vtk_xml

#: Header type -> (header format, piece format, VTK kind)
PARTITIONED_TYPES = {
    "pvti": ("PImageData", "vti"),
    "pvtu": ("PUnstructuredGrid", "vtu"),
    "pvtp": ("PPolyData", "vtp"),
}
_FIX = "re-export it, or check that every piece file was copied next to the header"


@dataclass(frozen=True)
class Piece:
    """One ``<Piece Source=...>`` of a partitioned header (``extent`` only for image pieces)."""

    location: Location
    extent: tuple[int, ...] | None

    @property
    def name(self) -> str:
        return self.location.name


def parse_partitioned(location: Location, fmt: str) -> tuple[ET.Element, list[str], list[str], list[Piece]]:
    """(header element, point fields, cell fields, pieces); InputError for a bad header or missing piece."""
    element_name, piece_format = PARTITIONED_TYPES[fmt]
    with location.open() as f:
        text = f.read()
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(location.url, f"truncated or not a .{fmt} (XML) file ({exc})", _FIX) from None
    grid = root.find(element_name)
    if root.tag != "VTKFile" or grid is None:
        raise InputError(location.url, f"not a partitioned VTK file (expected <VTKFile type=\"{element_name}\">)",
                         _FIX)
    points = [a.get("Name", "") for a in grid.findall("./PPointData/PDataArray")]
    cells = [a.get("Name", "") for a in grid.findall("./PCellData/PDataArray")]
    entries = grid.findall("Piece")
    if not entries:
        raise InputError(location.url, "lists no <Piece> files", "re-export it")
    pieces = []
    for number, entry in enumerate(entries):
        source = entry.get("Source")
        if not source:
            raise InputError(location.url, f"<Piece> number {number} has no Source attribute", _FIX)
        piece = location.sibling(source)
        if not piece.name.lower().endswith(f".{piece_format}"):
            raise InputError(piece.url, f"listed in {location.name} but is not a .{piece_format} file", _FIX)
        if not piece.exists():
            raise InputError(piece.url, f"missing piece {number + 1} of {len(entries)} listed in {location.name}",
                             "copy the missing piece next to the header, or re-export the dataset")
        extent = tuple(int(v) for v in entry.get("Extent", "").split()) or None
        pieces.append(Piece(piece, extent))
    return grid, [p for p in points if p], [c for c in cells if c], pieces


class PartitionedDataset(Dataset):
    """A .pvti, .pvtu or .pvtp header and its pieces: one time step.

    Example:
        >>> ds = open_dataset("mesh.pvtu")    # doctest: +SKIP
        >>> ds.read(0).n_cells                # doctest: +SKIP
        48000
    """

    def __init__(self, location: Location, fmt: str) -> None:
        self.format = fmt
        self.piece_format = PARTITIONED_TYPES[fmt][1]
        grid, self._points, self._cells, self.pieces = parse_partitioned(location, fmt)
        if fmt == "pvti":
            self._whole = tuple(int(v) for v in grid.get("WholeExtent", "").split())
            self._origin = tuple(float(v) for v in grid.get("Origin", "0 0 0").split())
            self._spacing = tuple(float(v) for v in grid.get("Spacing", "1 1 1").split())
            if len(self._whole) != 6 or any(p.extent is None or len(p.extent) != 6 for p in self.pieces):
                raise InputError(location.url, "has no valid WholeExtent or a piece without an Extent", _FIX)
        super().__init__(location, [0.0])

    @property
    def is_volume(self) -> bool:  # type: ignore[override]
        return self.format == "pvti"

    def stamps(self) -> list[FileStamp]:
        return [self.location.stamp()] + [p.location.stamp() for p in self.pieces]

    def _volume(self, step: int, field: str, chunk_bytes: int | None) -> ChunkedVolume:
        """One dask chunk per piece: each chunk task reads exactly one piece file."""
        whole = self._whole
        extents = [p.extent for p in self.pieces if p.extent is not None]
        starts = [sorted({e[2 * a] - whole[2 * a] for e in extents}) for a in range(3)]
        sizes = [whole[2 * a + 1] - whole[2 * a] + 1 for a in range(3)]
        chunks = [tuple(np.diff(starts[a] + [sizes[a]]).tolist()) for a in (2, 1, 0)]
        array = PieceVolumeArray(self, field)
        if array.components > 1:
            chunks.append((array.components,))
        token = dask.base.tokenize(self.fingerprint(), field)
        data = da.from_array(array, chunks=tuple(chunks), asarray=False, fancy=False,
                             name=f"hpcviz-pvti-{token}")
        origin = tuple(o + whole[2 * a] * s for a, (o, s) in enumerate(zip(self._origin, self._spacing)))
        return ChunkedVolume(field, data, origin, self._spacing)  # type: ignore[arg-type]

    def _field_names(self) -> tuple[list[str], list[str]]:
        return list(self._points), list(self._cells)

    def _read_piece(self, piece: Piece, fields: list[str] | None) -> pyvista.DataSet:
        mesh = read_vtk_xml(piece.location.local_path(), self.piece_format, name=piece.location.url,
                            fields=fields)
        for association, names, data in (("point", self._points, mesh.point_data),
                                         ("cell", self._cells, mesh.cell_data)):
            for name in names:
                if (fields is None or name in fields) and name not in data:
                    raise InputError(piece.location.url, f"has no {association} field {name!r}, which "
                                     f"{self.location.name} declares for every piece", _FIX)
        return mesh

    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        meshes = [(piece, self._read_piece(piece, fields)) for piece in self.pieces]
        if self.format == "pvti":
            return self._assemble_image(meshes)
        if len(meshes) == 1:
            return meshes[0][1]
        return pyvista.merge([m for _, m in meshes], merge_points=False)

    def _assemble_image(self, meshes: list[tuple[Piece, pyvista.DataSet]]) -> pyvista.ImageData:
        """Copy each piece's arrays into its extent of the whole image."""
        whole = self._whole
        image = pyvista.ImageData()
        image.SetExtent(*whole)
        image.SetOrigin(*self._origin)
        image.SetSpacing(*self._spacing)
        point_dims = tuple(whole[2 * a + 1] - whole[2 * a] + 1 for a in range(3))
        cell_dims = tuple(max(d - 1, 1) for d in point_dims)
        for association, dims in (("point", point_dims), ("cell", cell_dims)):
            target = image.point_data if association == "point" else image.cell_data
            names = meshes[0][1].point_data.keys() if association == "point" else meshes[0][1].cell_data.keys()
            for name in names:
                first = np.asarray(meshes[0][1].point_data[name] if association == "point"
                                   else meshes[0][1].cell_data[name])
                components = first.shape[1:] if first.ndim > 1 else ()
                values = np.zeros(dims[::-1] + components, dtype=first.dtype)
                for piece, mesh in meshes:
                    data = mesh.point_data if association == "point" else mesh.cell_data
                    box = _box(piece.extent, whole, association)  # type: ignore[arg-type]
                    shape = tuple(s.stop - s.start for s in box)
                    values[box] = np.asarray(data[name]).reshape(shape + components)
                target[name] = values.reshape((-1,) + components)
        return image


def _box(extent: tuple[int, ...], whole: tuple[int, ...], association: str) -> tuple[slice, slice, slice]:
    """The (z, y, x) slices a piece's extent covers in the whole image's point or cell arrays."""
    slices = []
    for axis in (2, 1, 0):
        lo, hi = extent[2 * axis] - whole[2 * axis], extent[2 * axis + 1] - whole[2 * axis]
        if association == "point":
            slices.append(slice(lo, hi + 1))
        else:
            slices.append(slice(lo, max(hi, lo + 1)))
    return tuple(slices)  # type: ignore[return-value]


class PieceVolumeArray:
    """A point field of a .pvti as one array ``[z, y, x(, c)]``; a box is read from the pieces it overlaps.

    Picklable (holds the dataset, which holds locations only), so dask workers
    read their own pieces.
    """

    def __init__(self, dataset: PartitionedDataset, field: str) -> None:
        self.dataset = dataset
        self.field = field
        header = _piece_array_header(dataset, field)
        whole = dataset._whole
        self.components = header[1]
        self.shape = tuple(whole[2 * a + 1] - whole[2 * a] + 1 for a in (2, 1, 0)) + (
            (self.components,) if self.components > 1 else ())
        self.dtype = header[0]
        self.ndim = len(self.shape)

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        box = [s.indices(n)[:2] for s, n in zip(index[:3], self.shape[:3])]  # (z, y, x) [start, stop)
        out = np.empty(tuple(b - a for a, b in box) + self.shape[3:], dtype=self.dtype)
        whole = self.dataset._whole
        for piece in self.dataset.pieces:
            extent = piece.extent
            lo = [extent[2 * a] - whole[2 * a] for a in (2, 1, 0)]  # type: ignore[index]
            hi = [extent[2 * a + 1] - whole[2 * a] + 1 for a in (2, 1, 0)]  # type: ignore[index]
            overlap = [(max(a, l), min(b, h)) for (a, b), l, h in zip(box, lo, hi)]
            if any(a >= b for a, b in overlap):
                continue
            mesh = self.dataset._read_piece(piece, [self.field])
            values = np.asarray(mesh.point_data[self.field]).reshape(
                tuple(h - l for l, h in zip(lo, hi)) + self.shape[3:])
            source = tuple(slice(a - l, b - l) for (a, b), l in zip(overlap, lo))
            target = tuple(slice(a - s, b - s) for (a, b), (s, _) in zip(overlap, box))
            out[target] = values[source]
        return out


def _piece_array_header(dataset: PartitionedDataset, field: str) -> tuple[np.dtype, int]:
    """(dtype, components) of a point field, from the header's <PDataArray>."""
    with dataset.location.open() as f:
        root = ET.fromstring(f.read())
    for array in root.iter("PDataArray"):
        if array.get("Name") == field:
            vtk_type = array.get("type", "Float32")  # "Float32", "UInt8", ...: NumPy's names, capitalized
            return np.dtype(vtk_type.lower()), int(array.get("NumberOfComponents", "1"))
    raise InputError(dataset.source, f"declares no point field {field!r}", _FIX)
