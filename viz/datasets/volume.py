"""One field of one time step of a uniform grid, as a lazy chunked dask array.

This is how the reduction engine reads volumes larger than memory: nothing
is read until a chunk is computed, and every chunk is read on its own (from
a Zarr/NetCDF chunk, or a byte range of a raw .vti file), so a Dask worker
holds only the chunks it works on.

Layout: ``data`` is indexed ``[z, y, x]`` (``[z, y, x, component]`` for
vectors), x varying fastest, exactly VTK's point order; so
``data.compute().reshape(-1)`` is the VTK point array and
``data[k, j, i]`` is the point at ``origin + (i, j, k) * spacing``.

Example:
    >>> vol = open_dataset("ocean.zarr").volume(0, "temperature")  # doctest: +SKIP
    >>> vol.dimensions, vol.data.chunksize                          # doctest: +SKIP
    ((1024, 1024, 1024), (256, 256, 256))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import pyvista

#: Default chunk size in bytes when the caller does not choose: big enough to
#: amortise task overhead, small enough that 2 workers x a few chunks fit in 1.5 GB.
DEFAULT_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ChunkedVolume:
    """A lazy point field on an axis-aligned uniform grid.

    Attributes:
        name: the field name.
        data: dask array ``[z, y, x]`` or ``[z, y, x, c]`` (see module docstring).
        origin: world position (x, y, z) of point ``[0, 0, 0]``.
        spacing: distance between neighbouring points along x, y, z.

    Example:
        >>> vol = ChunkedVolume("p", da.zeros((4, 3, 2), chunks=2), (0, 0, 0), (1, 1, 1))
        >>> vol.dimensions, vol.components
        ((2, 3, 4), 1)
    """

    name: str
    data: da.Array
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]

    @property
    def dimensions(self) -> tuple[int, int, int]:
        """Points along (x, y, z), as ``pyvista.ImageData.dimensions``."""
        nz, ny, nx = self.data.shape[:3]
        return int(nx), int(ny), int(nz)

    @property
    def components(self) -> int:
        """1 for a scalar field, else the number of components."""
        return 1 if self.data.ndim == 3 else int(self.data.shape[3])

    @property
    def bounds(self) -> tuple[float, ...]:
        """(xmin, xmax, ymin, ymax, zmin, zmax) of the grid points."""
        out: list[float] = []
        for o, s, n in zip(self.origin, self.spacing, self.dimensions):
            out += [float(o), float(o + s * (n - 1))]
        return tuple(out)

    def to_image(self) -> pyvista.ImageData:
        """Compute the whole field into a ``pyvista.ImageData`` (only for data that fits in memory).

        Example:
            >>> ChunkedVolume("p", da.ones((2, 2, 2)), (0, 0, 0), (1, 1, 1)).to_image()["p"].sum()
            8.0
        """
        image = pyvista.ImageData(dimensions=self.dimensions, spacing=self.spacing, origin=self.origin)
        values = np.asarray(self.data.compute())
        image.point_data[self.name] = values.reshape(-1) if self.components == 1 else values.reshape(
            -1, self.components)
        return image


def chunks_for(shape: tuple[int, ...], dtype: Any, native: tuple[int, ...] | None = None,
               target_bytes: int | None = None) -> tuple[int, ...]:
    """Chunk sizes for a [z, y, x(, c)] array: whole multiples of ``native``, about ``target_bytes``.

    The component axis is never split. Cube-ish chunks keep halos cheap.

    Example:
        >>> chunks_for((1024, 1024, 1024), "float32", native=(64, 64, 64), target_bytes=64 * 2**20)
        (256, 256, 256)
    """
    target = int(target_bytes or DEFAULT_CHUNK_BYTES)
    spatial = tuple(int(s) for s in shape[:3])
    base = tuple(int(n) for n in native[:3]) if native else (1, 1, 1)
    extra = math.prod(shape[3:]) if len(shape) > 3 else 1
    itemsize = np.dtype(dtype).itemsize * extra
    chunk = [min(b, s) for b, s in zip(base, spatial)]
    # Grow the smallest axis (in multiples of its native size) while the chunk stays under target.
    while True:
        grown = False
        for axis in sorted(range(3), key=lambda a: chunk[a]):
            if chunk[axis] >= spatial[axis]:
                continue
            bigger = min(spatial[axis], chunk[axis] + base[axis] if base[axis] > 1 else chunk[axis] * 2)
            if math.prod(chunk[:axis] + [bigger] + chunk[axis + 1:]) * itemsize <= target:
                chunk[axis] = bigger
                grown = True
                break
        if not grown:
            break
    return tuple(chunk) + tuple(int(s) for s in shape[3:])


class RawVolumeFile:
    """A raw little- or big-endian array inside a file, read by byte ranges on demand.

    Picklable (holds a path, not a handle), so a dask array built on it can
    travel to workers; each ``[...]`` opens a read-only memory map and copies
    out the requested box only.

    Example:
        >>> arr = da.from_array(RawVolumeFile("a.vti", 1234, (64, 64, 64), "<f4"), chunks=32)  # doctest: +SKIP
    """

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.path = str(path)
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        mapped = np.memmap(self.path, mode="r", dtype=self.dtype, offset=self.offset, shape=self.shape)
        try:
            return np.array(mapped[index], dtype=self.dtype.newbyteorder("="))
        finally:
            del mapped

    def __repr__(self) -> str:
        return f"RawVolumeFile({self.path!r}, offset={self.offset}, shape={self.shape}, dtype={self.dtype})"


def from_raw(name: str, raw: RawVolumeFile, origin, spacing, *, target_bytes: int | None = None,
             native: tuple[int, ...] | None = None) -> ChunkedVolume:
    """A ChunkedVolume over a :class:`RawVolumeFile` (whole z-slabs are contiguous, so chunks span x)."""
    chunks = chunks_for(raw.shape, raw.dtype, native=native, target_bytes=target_bytes)
    data = da.from_array(raw, chunks=chunks, asarray=False, fancy=False,
                         name=f"hpcviz-raw-{dask.base.tokenize(raw.path, raw.offset, raw.shape, str(raw.dtype))}")
    return ChunkedVolume(name, data, tuple(map(float, origin)), tuple(map(float, spacing)))


__all__ = ["DEFAULT_CHUNK_BYTES", "ChunkedVolume", "RawVolumeFile", "chunks_for", "from_raw"]
