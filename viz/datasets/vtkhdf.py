"""VTKHDF files (.vtkhdf, .hdf, .h5 with a /VTKHDF group): ImageData, UnstructuredGrid, PolyData.

Whole time steps are read by VTK's ``vtkHDFReader`` (time steps from
``/VTKHDF/Steps/Values``). The header (type, fields, time values) is read
with h5py, straight from fsspec for remote files. For ImageData,
:meth:`VtkHdfDataset.volume` reads hyperslabs of the HDF5 dataset with h5py:
only the chunks a region touches are fetched, locally or remotely, and
nothing goes through the whole-file cache.

Example:
    >>> ds = open_dataset("run.vtkhdf")               # doctest: +SKIP
    >>> ds.kind, ds.time_values                       # doctest: +SKIP
    ('ImageData', [0.0, 0.5, 1.0])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import pyvista
from vtkmodules.vtkIOHDF import vtkHDFReader

from ..errors import InputError
from .base import Dataset
from .decode_errors import decode_error, describe_index
from .location import FileStamp, Location
from .volume import ChunkedVolume, chunks_for
from .vtk_errors import ErrorCollector

SUPPORTED_TYPES = ("ImageData", "UnstructuredGrid", "PolyData")
_FIX = "re-export it with VTK's vtkHDFWriter, or check the path"


@contextlib.contextmanager
def open_hdf5(location: Location) -> Iterator[Any]:
    """An ``h5py.File`` for a local path or an fsspec URL (ranged reads, no download).

    Raises InputError naming the file when it is not (or no longer) an HDF5 file.
    """
    import h5py

    handle = None
    try:
        try:
            if location.is_local:
                h5 = h5py.File(location.url, "r")
            else:
                handle = location.open()
                h5 = h5py.File(handle, "r")
        except OSError as exc:
            raise InputError(location.url, f"truncated or not an HDF5 file ({_short(exc)})", _FIX) from None
        with h5:
            yield h5
    finally:
        if handle is not None:
            handle.close()


def is_vtkhdf(location: Location) -> bool:
    """Whether an HDF5 file holds a VTKHDF dataset (a /VTKHDF group)."""
    with open_hdf5(location) as h5:
        return "VTKHDF" in h5


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class HdfVolumeArray:
    """One field of one ImageData time step inside a VTKHDF file, read by hyperslab on demand.

    Picklable (holds the Location, not a handle); each ``[...]`` opens the file,
    reads the box and closes it, so dask workers share nothing.
    """

    def __init__(self, location: Location, dataset: str, step_index: int | None,
                 shape: tuple[int, ...], dtype: Any) -> None:
        self.location = location
        self.dataset = dataset
        self.step_index = step_index
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if self.step_index is not None:
            index = (self.step_index,) + index
        with open_hdf5(self.location) as h5:
            try:
                return np.asarray(h5[self.dataset][index])
            except (OSError, ValueError, RuntimeError) as exc:  # a chunk that does not decode
                where = describe_index(index[1:] if self.step_index is not None else index, self.shape,
                                       ("z", "y", "x", "component"))
                raise decode_error(self.location.url, self.dataset.rsplit("/", 1)[-1], where, exc) from None


class VtkHdfDataset(Dataset):
    """A VTKHDF file; its ``kind`` is "ImageData", "UnstructuredGrid" or "PolyData"."""

    format = "vtkhdf"

    def __init__(self, location: Location) -> None:
        self.location = location
        with open_hdf5(location) as h5:
            if "VTKHDF" not in h5:
                raise InputError(location.url, "not a VTKHDF file (no /VTKHDF group)", _FIX)
            root = h5["VTKHDF"]
            self.kind = _text(root.attrs.get("Type", b""))
            if self.kind not in SUPPORTED_TYPES:
                raise InputError(location.url, f"VTKHDF type {self.kind!r} is not supported "
                                 f"(supported: {', '.join(SUPPORTED_TYPES)})", "convert it to one of them")
            self._points = sorted(root["PointData"].keys()) if "PointData" in root else []
            self._cells = sorted(root["CellData"].keys()) if "CellData" in root else []
            times = [0.0]
            self._offsets: dict[str, list[int]] = {}
            self._temporal = "Steps" in root
            if self._temporal:
                times = [float(t) for t in root["Steps/Values"][()]]
                offsets = root["Steps"].get("PointDataOffsets")
                if offsets is not None:
                    self._offsets = {name: [int(v) for v in offsets[name][()]] for name in offsets.keys()}
            if self.kind == "ImageData":
                self._extent = [int(v) for v in root.attrs["WholeExtent"]]
                self._origin = tuple(float(v) for v in root.attrs.get("Origin", (0, 0, 0)))
                self._spacing = tuple(float(v) for v in root.attrs.get("Spacing", (1, 1, 1)))
                direction = np.asarray(root.attrs.get("Direction", np.eye(3).ravel()), dtype=float)
                self._axis_aligned = bool(np.allclose(direction, np.eye(3).ravel()))
                self._shapes = {name: root["PointData"][name].shape for name in self._points}
                self._dtypes = {name: root["PointData"][name].dtype for name in self._points}
        super().__init__(location, times)

    @property
    def is_volume(self) -> bool:  # type: ignore[override]
        return self.kind == "ImageData" and self._axis_aligned

    def stamps(self) -> list[FileStamp]:
        return [self.location.stamp()]

    def _field_names(self) -> tuple[list[str], list[str]]:
        return list(self._points), list(self._cells)

    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        path = self.location.local_path()
        reader = vtkHDFReader()
        errors = ErrorCollector()
        errors.attach(reader)
        reader.SetFileName(path)
        reader.UpdateInformation()
        if fields is not None:
            for selection, names in ((reader.GetPointDataArraySelection(), self._points),
                                     (reader.GetCellDataArraySelection(), self._cells)):
                for name in names:
                    selection.SetArraySetting(name, int(name in fields))
        if self._temporal:
            reader.UpdateTimeStep(self.time_values[step])
        else:
            reader.Update()
        output = reader.GetOutputDataObject(0)
        if errors.messages or output is None:
            raise InputError(self.source, f"truncated or not a VTKHDF file ({errors.first() or 'no output'})",
                             _FIX)
        result = output.NewInstance()
        result.ShallowCopy(output)
        result.GetFieldData().RemoveArray("Time")  # the reader's own bookkeeping, not a field
        return pyvista.wrap(result)

    def _volume(self, step: int, field: str, chunk_bytes: int | None) -> ChunkedVolume:
        shape = tuple(self._shapes[field])
        dtype = self._dtypes[field]
        step_index = None
        if self._temporal:
            offsets = self._offsets.get(field)
            step_index = offsets[step] if offsets else step
            shape = shape[1:]
        array = HdfVolumeArray(self.location, f"VTKHDF/PointData/{field}", step_index, shape, dtype)
        native = self._native_chunks(field)
        if native is not None:
            native = native[1:4] if self._temporal else native[:3]
        else:  # unfiltered storage: any box reads only its own bytes, so whole z planes will do
            native = (1,) + shape[1:3]
        chunks = chunks_for(shape, dtype, target_bytes=chunk_bytes, native=native)
        token = dask.base.tokenize(self.fingerprint(), field, step)
        data = da.from_array(array, chunks=chunks, asarray=False, fancy=False, name=f"hpcviz-vtkhdf-{token}")
        e = self._extent
        origin = tuple(o + e[2 * a] * s for a, (o, s) in enumerate(zip(self._origin, self._spacing)))
        return ChunkedVolume(field, data, origin, self._spacing)  # type: ignore[arg-type]

    def _native_chunks(self, field: str) -> tuple[int, ...] | None:
        """The HDF5 chunk shape when chunks must be decoded whole (compressed), else None."""
        with open_hdf5(self.location) as h5:
            dataset = h5[f"VTKHDF/PointData/{field}"]
            filtered = bool(dataset.chunks) and dataset.id.get_create_plist().get_nfilters() > 0
            return tuple(dataset.chunks) if filtered else None
