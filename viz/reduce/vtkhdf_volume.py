"""Write a chunked volume into one VTKHDF ImageData file, chunk by chunk, from any number of workers.

HDF5 allows one writer at a time, so the expensive part happens outside it:
each :func:`write_vtkhdf_block` task deflates its chunk itself (the bytes of
HDF5's own deflate filter) and then, holding an exclusive lock on a sidecar
file, hands the compressed chunk to HDF5 as it is (``write_direct_chunk``).
Compression runs on every worker at once; only the copy into the file takes
turns. Dask chunks must therefore be HDF5 chunks: :func:`regular_chunks`
gives the grid the dask array is rechunked to first (a no-op for the usual
coarsened volume). :func:`create_vtkhdf` writes the attributes VTK's own
``vtkHDFWriter`` writes, so VTK, ParaView and pyvista read the file.

Example:
    >>> layout = VtkhdfLayout.plan({"p": ((64, 64, 64), "float32")}, (32, 32, 32), (0,) * 3, (1,) * 3, 4)  # doctest: +SKIP
    >>> create_vtkhdf("volume_000000.vtkhdf", layout)                                                    # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

VERSION = (2, 8)  #: the VTKHDF version VTK 9.4+ writes for ImageData


@dataclass(frozen=True)
class VtkhdfLayout:
    """The arrays of a VTKHDF ImageData file: (name, shape [z, y, x(, c)], dtype), one chunk shape, compression."""

    arrays: tuple[tuple[str, tuple[int, ...], str], ...]
    chunk: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    level: int

    @classmethod
    def plan(cls, fields: dict[str, tuple[tuple[int, ...], Any]], chunk: tuple[int, int, int], origin, spacing,
             level: int) -> VtkhdfLayout:
        """Lay out ``fields`` (name -> (shape, dtype)); float16 is stored as float32 (VTK has no 16-bit floats)."""
        arrays = tuple((name, tuple(int(s) for s in shape),
                        "float32" if np.dtype(dtype) == np.float16 else np.dtype(dtype).name)
                       for name, (shape, dtype) in fields.items())
        return cls(arrays, tuple(int(c) for c in chunk), tuple(map(float, origin)), tuple(map(float, spacing)),
                   int(level))


def regular_chunks(shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """Chunks along each of the first three axes all of the largest chunk's size but the last: HDF5's chunk grid.

    Example:
        >>> regular_chunks((10, 8, 8), ((3, 4, 3), (8,), (4, 4)))
        ((4, 4, 2), (8,), (4, 4))
    """
    out = []
    for n, axis in zip(shape[:3], chunks[:3]):
        size = max(axis)
        out.append((size,) * (n // size) + ((n % size,) if n % size else ()))
    return tuple(out) + tuple(chunks[3:])


def create_vtkhdf(path: str | Path, layout: VtkhdfLayout) -> Path:
    """Create the file with VTK's attributes and one chunked dataset per field (no data yet).

    Idempotent: an existing file (a rerun after a lost worker) is kept, with the blocks already in it.

    Raises:
        FileNotFoundError: the folder is gone (a cancelled reduction removed it).
    """
    import h5py

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: no such directory {path.parent}")
    with _exclusive(path):
        if path.is_file():
            return path
        partial = path.with_name(f".{path.name}.partial")
        nz, ny, nx = layout.arrays[0][1][:3]
        with h5py.File(partial, "w") as f:
            root = f.create_group("VTKHDF")
            root.attrs["Version"] = np.asarray(VERSION, dtype=np.int64)
            root.attrs["Type"] = np.bytes_(b"ImageData")
            root.attrs["WholeExtent"] = np.asarray([0, nx - 1, 0, ny - 1, 0, nz - 1], dtype=np.int32)
            root.attrs["Origin"] = np.asarray(layout.origin, dtype=np.float64)
            root.attrs["Spacing"] = np.asarray(layout.spacing, dtype=np.float64)
            root.attrs["Direction"] = np.eye(3).reshape(-1)
            root.create_group("CellData")
            points = root.create_group("PointData")
            for number, (name, shape, dtype) in enumerate(layout.arrays):
                chunk = tuple(min(c, s) for c, s in zip(layout.chunk, shape[:3])) + tuple(shape[3:])
                options = {"compression": "gzip", "compression_opts": layout.level} if layout.level else {}
                data = points.create_dataset(name, shape=shape, dtype=np.dtype(dtype).newbyteorder("<"),
                                             chunks=chunk, **options)
                if number == 0 and len(shape) == 3:
                    data.attrs["Attribute"] = np.bytes_(b"Scalars")
        os.replace(partial, path)
    return path


def write_vtkhdf_block(path: str | Path, layout: VtkhdfLayout, name: str, block: np.ndarray,
                       start: tuple[int, int, int]) -> tuple[float, float, int]:
    """Put ``block`` ([z, y, x(, c)], one whole HDF5 chunk) into array ``name`` at index ``start`` (z, y, x).

    Returns:
        (min, max, bytes) as :func:`.volume_file.write_block` does.
    """
    import h5py

    from .volume_file import value_range

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot write {path}: it is gone (a cancelled reduction removed it)")
    shape, dtype = next((s, d) for n, s, d in layout.arrays if n == name)
    block = np.ascontiguousarray(block, dtype=np.dtype(dtype).newbyteorder("<"))
    chunk = tuple(min(c, s) for c, s in zip(layout.chunk, shape[:3])) + tuple(shape[3:])
    if any(s % c for s, c in zip(start, chunk)) or any(b > c for b, c in zip(block.shape, chunk)):
        raise ValueError(f"block at {start} of shape {block.shape} is not one chunk of {chunk}")
    if layout.level:
        whole = np.zeros(chunk, dtype=block.dtype)  # HDF5 stores edge chunks whole
        whole[tuple(slice(0, n) for n in block.shape)] = block
        payload = zlib.compress(whole.tobytes(), layout.level)  # HDF5's deflate filter: zlib streams
        with _exclusive(path), h5py.File(path, "r+") as f:
            f[f"VTKHDF/PointData/{name}"].id.write_direct_chunk(tuple(start) + (0,) * (len(shape) - 3), payload)
    else:
        z, y, x = start
        with _exclusive(path), h5py.File(path, "r+") as f:
            f[f"VTKHDF/PointData/{name}"][z:z + block.shape[0], y:y + block.shape[1], x:x + block.shape[2]] = block
    lo, hi = value_range(block)
    return lo, hi, int(block.nbytes)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.<name>.lock`` next to ``path``: one HDF5 writer at a time, across processes."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_lock(path: str | Path) -> None:
    """Remove the sidecar lock of ``path`` once every block is written."""
    Path(path).with_name(f".{Path(path).name}.lock").unlink(missing_ok=True)


__all__ = ["VtkhdfLayout", "create_vtkhdf", "regular_chunks", "remove_lock", "write_vtkhdf_block"]
