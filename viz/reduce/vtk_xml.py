"""Write reduced data as VTK XML files (.vti, .vtp, ...) and .pvd time series.

Files are binary and appended, readable by ParaView and by pyvista. Meshes
(connectivity compresses well) are zlib-compressed at level 1; volumes are
not: float fields shrink by ~7% under zlib at 30x the write time (measured on
a 96^3 coarsened synthetic step: 0.9 s vs 0.03 s).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pyvista as pv
from vtkmodules.util.misc import calldata_type
from vtkmodules.vtkCommonCore import VTK_STRING
from vtkmodules.vtkIOXML import (
    vtkXMLImageDataWriter,
    vtkXMLPolyDataWriter,
    vtkXMLRectilinearGridWriter,
    vtkXMLStructuredGridWriter,
    vtkXMLUnstructuredGridWriter,
)

#: VTK class -> (file extension, writer class).
_WRITERS = {
    "vtkImageData": (".vti", vtkXMLImageDataWriter),
    "vtkUniformGrid": (".vti", vtkXMLImageDataWriter),
    "vtkPolyData": (".vtp", vtkXMLPolyDataWriter),
    "vtkUnstructuredGrid": (".vtu", vtkXMLUnstructuredGridWriter),
    "vtkStructuredGrid": (".vts", vtkXMLStructuredGridWriter),
    "vtkRectilinearGrid": (".vtr", vtkXMLRectilinearGridWriter),
}


def extension_for(mesh: pv.DataSet) -> str:
    """The VTK XML file extension for ``mesh`` (".vti" for ImageData, ...).

    Example:
        >>> extension_for(pv.ImageData())
        '.vti'
    """
    try:
        return _WRITERS[mesh.GetClassName()][0]
    except KeyError:
        raise TypeError(f"no VTK XML writer for {mesh.GetClassName()}") from None


def write_vtk_xml(mesh: pv.DataSet, stem: str | Path, *, compress: bool | None = None,
                  compressor: str = "zlib", level: int = 1) -> Path:
    """Write ``mesh`` to ``stem`` + its extension; return the path written.

    ``compress`` defaults to True for meshes with cells listed explicitly
    (PolyData, UnstructuredGrid) and False for lattices; ``compressor`` is
    zlib, lz4 or lzma, at ``level`` 1 (fastest) to 9 (smallest).

    Raises:
        OSError: VTK could not write the file (it reports through its return
            value, not an exception; this turns that into one).

    Example:
        >>> write_vtk_xml(pv.Sphere(), "/tmp/sphere")  # doctest: +SKIP
        PosixPath('/tmp/sphere.vtp')
    """
    ext = extension_for(mesh)
    writer = _WRITERS[mesh.GetClassName()][1]()
    path = Path(f"{stem}{ext}")
    writer.SetFileName(str(path))
    writer.SetInputData(mesh)
    writer.SetDataModeToAppended()
    writer.EncodeAppendedDataOff()
    if compress is None:
        compress = ext in (".vtp", ".vtu")
    if compress:
        {"zlib": writer.SetCompressorTypeToZLib, "lz4": writer.SetCompressorTypeToLZ4,
         "lzma": writer.SetCompressorTypeToLZMA}[compressor]()
        writer.SetCompressionLevel(int(level))
    else:
        writer.SetCompressorTypeToNone()
    if not path.parent.is_dir():  # e.g. a cancelled task whose output directory was removed
        raise FileNotFoundError(f"cannot write {path}: no such directory {path.parent}")
    errors = _ErrorCollector()
    errors.watch(writer)
    errors.watch(writer.GetExecutive())
    if writer.Write() != 1 or errors.messages or not path.is_file():
        raise OSError(f"VTK could not write {path}: {errors.first() or 'no output'}")
    return path


class _ErrorCollector:
    """Receives VTK error events (VTK then prints nothing) so they can be raised."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    @calldata_type(VTK_STRING)
    def _on_error(self, _caller, _event, message) -> None:
        self.messages.append(str(message or ""))

    def watch(self, vtk_object) -> None:
        vtk_object.AddObserver("ErrorEvent", self._on_error)

    def first(self) -> str:
        """The first messages without VTK's "ERROR: In file, line" header and object address."""
        texts = []
        for message in self.messages[:2]:
            lines = [x.strip() for x in message.strip().splitlines() if x.strip()]
            if lines and lines[0].startswith("ERROR: In "):
                lines = lines[1:]
            if lines:
                texts.append(re.sub(r"^\w+ \(0x[0-9a-f]+\): ", "", lines[0]))
        return "; ".join(texts)


#: NumPy dtype -> VTK XML type name.
_VTK_TYPES = {"float32": "Float32", "float64": "Float64", "int8": "Int8", "uint8": "UInt8",
              "int16": "Int16", "uint16": "UInt16", "int32": "Int32", "uint32": "UInt32",
              "int64": "Int64", "uint64": "UInt64"}


def write_pvtp(path: str | Path, pieces: Sequence[str], points_dtype: str,
               point_arrays: Sequence[tuple[str, str, int]]) -> Path:
    """Write a partitioned PolyData header (.pvtp) listing piece .vtp files (relative names).

    ``point_arrays`` are (name, NumPy dtype name, components) of the point
    data every piece has. ParaView and ``vtkXMLPPolyDataReader`` read the
    pieces appended into one PolyData.

    Example:
        >>> write_pvtp("/tmp/s.pvtp", ["s_p0000.vtp"], "float32", [("f", "float32", 1)])  # doctest: +SKIP
    """
    arrays = "".join(
        f'      <PDataArray type="{_VTK_TYPES[dtype]}" Name={quoteattr(name)} NumberOfComponents="{components}"/>\n'
        for name, dtype, components in point_arrays)
    normals = ' Normals="Normals"' if ("Normals", "float32", 3) in point_arrays else ""
    lines = [
        '<?xml version="1.0"?>',
        '<VTKFile type="PPolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
        '  <PPolyData GhostLevel="0">',
        f"    <PPointData{normals}>",
        arrays.rstrip("\n"),
        "    </PPointData>",
        "    <PPoints>",
        f'      <PDataArray type="{_VTK_TYPES[points_dtype]}" NumberOfComponents="3"/>',
        "    </PPoints>",
        *(f"    <Piece Source={quoteattr(name)}/>" for name in pieces),
        "  </PPolyData>",
        "</VTKFile>",
        "",
    ]
    path = Path(path)
    path.write_text("\n".join(line for line in lines if line), encoding="utf-8")
    return path


def write_pvd(path: str | Path, entries: Sequence[tuple[float, str]]) -> Path:
    """Write a ParaView .pvd collection: one (time, relative file name) per step.

    Example:
        >>> write_pvd("/tmp/volume.pvd", [(0.0, "volume_000000.vti")])  # doctest: +SKIP
    """
    lines = [
        '<?xml version="1.0"?>',
        '<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">',
        "  <Collection>",
        *(
            f'    <DataSet timestep="{time!r}" group="" part="0" file={quoteattr(name)}/>'
            for time, name in entries
        ),
        "  </Collection>",
        "</VTKFile>",
        "",
    ]
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
