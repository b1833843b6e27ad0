"""Write a chunked volume into one .vti file, chunk by chunk, from any number of workers.

The file is VTK XML ImageData with raw appended, uncompressed arrays (what
:func:`.vtk_xml.write_vtk_xml` writes for volumes): its size and every
array's offset are known from the shapes alone. :func:`create_vti` writes the
header and the tail and sizes the file; then each :func:`write_block` task
opens it, copies one chunk into its place through a memory map and returns
the chunk's value range. Blocks never overlap, so workers (on one node or on
a shared file system) write at the same time without locks, and a block
written twice (a task rerun after a lost worker) writes the same bytes.

Example:
    >>> layout = VtiLayout.plan({"p": ((4, 4, 4), "float32")}, (0, 0, 0), (1, 1, 1))  # doctest: +SKIP
    >>> create_vti("volume_000000.vti", layout)                                     # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_VTK_NAMES = {
    "int8": "Int8", "uint8": "UInt8", "int16": "Int16", "uint16": "UInt16", "int32": "Int32",
    "uint32": "UInt32", "int64": "Int64", "uint64": "UInt64", "float32": "Float32", "float64": "Float64",
}
_WORD = 8  # header_type="UInt64": every appended array starts with its byte count


@dataclass(frozen=True)
class VtiLayout:
    """Where each array of a raw-appended .vti lives: (name, shape [z, y, x(, c)], dtype, data offset)."""

    arrays: tuple[tuple[str, tuple[int, ...], str, int], ...]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    header: bytes
    size: int

    @classmethod
    def plan(cls, fields: dict[str, tuple[tuple[int, ...], Any]], origin, spacing) -> VtiLayout:
        """Lay out ``fields`` (name -> (shape [z, y, x(, c)], dtype)) in a file; float16 is stored as float32."""
        first_shape = next(iter(fields.values()))[0]
        nz, ny, nx = first_shape[:3]
        extent = f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
        lines = [
            '<?xml version="1.0"?>',
            '<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
            f'  <ImageData WholeExtent="{extent}" Origin="{" ".join(repr(float(o)) for o in origin)}" '
            f'Spacing="{" ".join(repr(float(s)) for s in spacing)}" Direction="1 0 0 0 1 0 0 0 1">',
            f'  <Piece Extent="{extent}">',
            "    <PointData>",
        ]
        offset = 0
        arrays = []
        for name, (shape, dtype) in fields.items():
            dtype = np.dtype(dtype)
            if dtype == np.float16:
                dtype = np.dtype(np.float32)  # VTK has no 16-bit float arrays
            components = shape[3] if len(shape) > 3 else 1
            lines.append(f'      <DataArray type="{_VTK_NAMES[dtype.name]}" Name="{_xml_escape(name)}" '
                         f'NumberOfComponents="{components}" format="appended" offset="{offset}"/>')
            arrays.append((name, tuple(int(s) for s in shape), dtype.name, offset + _WORD))
            offset += _WORD + math.prod(shape) * dtype.itemsize
        lines += ["    </PointData>", "    <CellData>", "    </CellData>", "  </Piece>", "  </ImageData>",
                  '  <AppendedData encoding="raw">', "   _"]
        header = "\n".join(lines).encode("utf-8")
        size = len(header) + offset + len(_TAIL)
        return cls(tuple(arrays), tuple(map(float, origin)), tuple(map(float, spacing)), header, size)


_TAIL = b"\n  </AppendedData>\n</VTKFile>\n"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def create_vti(path: str | Path, layout: VtiLayout) -> Path:
    """Write the header, every array's byte count and the tail; the data bytes stay zero for now.

    Idempotent: a file of the right size is updated in place, never truncated,
    so a rerun (after its worker was lost) keeps the blocks already written.

    Raises:
        FileNotFoundError: the folder is gone (a cancelled reduction removed it).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: no such directory {path.parent}")
    # Rerun after a lost worker: blocks other workers already wrote must survive.
    mode = "r+b" if path.is_file() and path.stat().st_size == layout.size else "wb"
    with open(path, mode) as f:
        f.write(layout.header)
        base = len(layout.header)
        for _, shape, dtype, offset in layout.arrays:
            f.seek(base + offset - _WORD)
            f.write(int(math.prod(shape) * np.dtype(dtype).itemsize).to_bytes(_WORD, "little"))
        f.seek(layout.size - len(_TAIL))
        f.write(_TAIL)
    return path


def write_block(path: str | Path, layout: VtiLayout, name: str, block: np.ndarray,
                start: tuple[int, int, int]) -> tuple[float, float, int]:
    """Copy ``block`` ([z, y, x(, c)]) into array ``name`` at index ``start`` (z, y, x).

    Returns:
        (min, max, bytes) of the block's finite values (vector magnitude for
        vectors; (inf, -inf) when none is finite), for the manifest's ranges.
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot write {path}: it is gone (a cancelled reduction removed it)")
    for array_name, shape, dtype, offset in layout.arrays:
        if array_name == name:
            break
    else:
        raise KeyError(name)
    block = np.asarray(block)
    target = np.memmap(path, mode="r+", dtype=np.dtype(dtype).newbyteorder("<"),
                       offset=len(layout.header) + offset, shape=shape)
    z, y, x = start
    target[z:z + block.shape[0], y:y + block.shape[1], x:x + block.shape[2]] = block
    target.flush()
    del target
    lo, hi = value_range(block)
    return lo, hi, int(block.nbytes)


def value_range(block: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values of ``block`` [z, y, x(, c)] (a vector's magnitude); (inf, -inf) if none.

    Example:
        >>> value_range(np.array([[[1.0, np.nan, 3.0]]]))
        (1.0, 3.0)
    """
    values = block if block.ndim == 3 else np.linalg.norm(block.astype(np.float64), axis=3)
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if values.size else (math.inf, -math.inf)


__all__ = ["VtiLayout", "create_vti", "value_range", "write_block"]
