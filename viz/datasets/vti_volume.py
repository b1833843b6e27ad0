"""A .vti point field as a chunked volume: byte ranges of raw appended data, or one whole read.

VTK XML image files written with raw (not base64) appended, uncompressed
data (what ``numpy.tofile`` writers, pyvista's ``save`` without compression
and this package's writers produce) store each array contiguously in x-fastest
order: chunks are read straight from the file by byte range. Other encodings
(compressed, base64, inline ASCII) are decoded by VTK as one whole array per
chunk task, which is correct but not memory-bounded.

Example:
    >>> vol = vti_volume("/data/step.vti", "pressure")   # doctest: +SKIP
    >>> vol.data.chunksize                                 # doctest: +SKIP
    (128, 256, 256)
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

import dask
import dask.array as da
import numpy as np

from ..errors import InputError
from .volume import ChunkedVolume, RawVolumeFile, chunks_for, from_raw

_VTK_TYPES = {
    "Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4", "UInt32": "u4",
    "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8",
}
_FIX = "re-export it, or check the path"


def _header(path: str) -> tuple[bytes, int]:
    """The XML before ``<AppendedData`` and the file offset of the first appended byte (-1: none)."""
    head = b""
    with open(path, "rb") as f:
        while b"<AppendedData" not in head:
            chunk = f.read(1 << 16)
            if not chunk or len(head) > (64 << 20):
                return head, -1
            head += chunk
    cut = head.index(b"<AppendedData")
    tag_end = head.find(b">", cut)
    underscore = head.find(b"_", tag_end)
    if b'encoding="raw"' not in head[cut:tag_end] or underscore < 0:
        return head[:cut], -1
    return head[:cut], underscore + 1


def vti_volume(path: str, field: str, *, name: str | None = None,
               chunk_bytes: int | None = None) -> ChunkedVolume:
    """The point field ``field`` of the .vti file at ``path`` as a ChunkedVolume.

    Raises:
        InputError: not an axis-aligned ImageData, no such point array, or a
            header that does not parse.
    """
    name = name or path
    xml, data_start = _header(path)
    text = xml.decode("latin-1")
    try:
        image = re.search(r"<ImageData\b[^>]*>", text).group(0)  # type: ignore[union-attr]
        attrs = ElementTree.fromstring(image.rstrip(">").rstrip("/") + "/>").attrib
    except (AttributeError, ElementTree.ParseError):
        raise InputError(name, "not a VTK XML ImageData file (no <ImageData> header)", _FIX) from None
    extent = [int(v) for v in attrs.get("WholeExtent", "").split()]
    origin = [float(v) for v in attrs.get("Origin", "0 0 0").split()]
    spacing = [float(v) for v in attrs.get("Spacing", "1 1 1").split()]
    direction = [float(v) for v in attrs.get("Direction", "1 0 0 0 1 0 0 0 1").split()]
    if len(extent) != 6 or not np.allclose(direction, np.eye(3).ravel()):
        raise InputError(name, "is not an axis-aligned ImageData (chunked reading needs one)",
                         "use read() for whole time steps")
    dims = tuple(extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3))
    first = [o + e * s for o, e, s in zip(origin, extent[0::2], spacing)]
    point_data = re.search(r"<PointData\b.*?(</PointData>|$)", text, re.S)
    arrays = re.findall(r"<DataArray\b[^>]*>", point_data.group(0) if point_data else "")
    for tag in arrays:
        attributes = dict(re.findall(r'(\w+)="([^"]*)"', tag))
        if attributes.get("Name") != field:
            continue
        components = int(attributes.get("NumberOfComponents", "1"))
        shape = dims[::-1] + ((components,) if components > 1 else ())
        little = 'byte_order="BigEndian"' not in text
        dtype = np.dtype(("<" if little else ">") + _VTK_TYPES.get(attributes.get("type", ""), "f4"))
        raw = (data_start >= 0 and attributes.get("format") == "appended" and "compressor=" not in text
               and attributes.get("type") in _VTK_TYPES)
        if raw:
            word = 8 if 'header_type="UInt64"' in text else 4
            offset = data_start + int(attributes["offset"]) + word
            return from_raw(field, RawVolumeFile(path, offset, shape, dtype), first, spacing,
                            target_bytes=chunk_bytes, native=(1, dims[1], dims[0]))
        return _whole_read(path, field, name, shape, dtype.newbyteorder("="), first, spacing, chunk_bytes)
    raise InputError(name, f"has no point array {field!r}", "use one of its point fields")


def _read_whole(path: str, field: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    from .vtk_xml import read_vtk_xml

    mesh = read_vtk_xml(path, "vti", name=name, fields=[field])
    return np.asarray(mesh.point_data[field]).reshape(shape)


def _whole_read(path, field, name, shape, dtype, origin, spacing, chunk_bytes) -> ChunkedVolume:
    """One task decodes the whole array with VTK; the result is split into chunks after."""
    whole = dask.delayed(_read_whole, pure=True)(path, field, name, shape)
    data = da.from_delayed(whole, shape=shape, dtype=dtype)
    data = data.rechunk(chunks_for(shape, dtype, target_bytes=chunk_bytes))
    return ChunkedVolume(field, data, tuple(origin), tuple(spacing))
