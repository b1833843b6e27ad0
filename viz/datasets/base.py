"""The Dataset every reader returns: time steps, fields, summary, fingerprint."""

from __future__ import annotations

import hashlib
import math
import operator
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import pyvista
from vtkmodules.util.numpy_support import get_numpy_array_type

from ..errors import InputError
from .location import FileStamp, Location
from .summary import DatasetSummary, FieldSummary, unknown_field_error
from .volume import ChunkedVolume

_KINDS_WITH_DIMENSIONS = ("ImageData", "StructuredGrid", "RectilinearGrid", "UniformGrid")


class Dataset(ABC):
    """A simulation output opened for reading: one or more time steps of one mesh.

    Create it with :func:`open_dataset`. Attributes: ``source`` (resolved path or
    URL), ``format`` ("vti", "vtu", "vtp", "vts", "pvti", "pvtu", "pvtp", "pvd",
    "vtkhdf", "exodus", "openfoam", "netcdf", "hdf5", "zarr", "raw"),
    ``time_values`` (``[0.0]`` for a single file), ``nbytes`` (bytes on
    storage, every file involved). Picklable, so it can be handed to Dask tasks.

    Example:
        >>> ds = open_dataset("sim/simulation.pvd")         # doctest: +SKIP
        >>> mesh = ds.read(ds.n_steps - 1, fields=["pressure"])  # doctest: +SKIP
    """

    format: str = ""

    def __init__(self, location: Location, time_values: Sequence[float]) -> None:
        self.location = location
        self.source = location.url
        self.time_values = [float(t) for t in time_values]
        self.nbytes = sum(s.size for s in self.stamps())
        self._summary: tuple[str, DatasetSummary] | None = None

    # -- to implement --------------------------------------------------------
    @abstractmethod
    def stamps(self) -> list[FileStamp]:
        """(url, size, version) of every file involved, in a stable order."""

    @abstractmethod
    def _field_names(self) -> tuple[list[str], list[str]]:
        """(point field names, cell field names), without reading the data."""

    @abstractmethod
    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        """Read one validated time step, only ``fields`` when not None."""

    # -- to implement by readers of uniform grids (see volume.py) ------------
    #: True when :meth:`volume` works: every time step is one axis-aligned uniform grid.
    is_volume: bool = False

    def _volume(self, step: int, field: str, chunk_bytes: int | None) -> ChunkedVolume:
        """A lazy chunked view of one validated (step, point field); only if ``is_volume``."""
        raise NotImplementedError

    # -- public API ----------------------------------------------------------
    @property
    def n_steps(self) -> int:
        """Number of time steps (1 for a single file)."""
        return len(self.time_values)

    def field_names(self) -> list[str]:
        """Names of the point fields, then of the cell fields (read from headers only)."""
        points, cells = self._field_names()
        return points + [c for c in cells if c not in points]

    def read(self, step: int = 0, *, fields: Sequence[str] | None = None) -> pyvista.DataSet:
        """Read time step ``step`` as a pyvista dataset.

        Args:
            step: index into ``time_values`` (0 <= step < n_steps).
            fields: read only these fields (faster for large files); None reads all.

        Raises:
            InputError: step out of range, unknown field, or an unreadable file.

        Example:
            >>> grid = open_dataset("sim/simulation.pvd").read(2)  # doctest: +SKIP
            >>> grid["pressure"].dtype                              # doctest: +SKIP
            dtype('float32')
        """
        index = self._check_step(step)
        wanted = None
        if fields is not None:
            available = self.field_names()
            wanted = [str(f) for f in ([fields] if isinstance(fields, str) else fields)]
            for name in wanted:
                if name not in available:
                    raise unknown_field_error(name, available, self.source)
        return self._read(index, wanted)

    def volume(self, step: int, field: str, *, chunk_bytes: int | None = None) -> ChunkedVolume:
        """One point field of time step ``step`` as a lazy, chunked dask array (nothing is read yet).

        Only for uniform grids (``is_volume`` is True: Zarr, NetCDF, .vti, ...).
        Chunks follow the storage's own chunks, merged up to about
        ``chunk_bytes`` (default :data:`~.volume.DEFAULT_CHUNK_BYTES`).

        Raises:
            InputError: not a uniform grid, step out of range, unknown field.

        Example:
            >>> vol = open_dataset("run.zarr").volume(0, "pressure")   # doctest: +SKIP
            >>> float(vol.data.max().compute())                         # doctest: +SKIP
            1.93
        """
        if not self.is_volume:
            raise InputError(self.source, f"is {self.format} data, not a uniform grid that can be read "
                             "chunk by chunk", "use read() for whole time steps")
        index = self._check_step(step)
        if field not in self._field_names()[0]:
            raise unknown_field_error(field, self.field_names(), self.source)
        return self._volume(index, field, chunk_bytes)

    def _check_step(self, step: int) -> int:
        try:
            index = operator.index(step)
        except TypeError:
            raise InputError(self.source, f"time step {step!r} is not an integer",
                             f"use a step between 0 and {self.n_steps - 1}") from None
        if not 0 <= index < self.n_steps:
            raise InputError(self.source, f"time step {index} is out of range (it has {self.n_steps} "
                             f"time step{'s' if self.n_steps != 1 else ''})",
                             f"use a step between 0 and {self.n_steps - 1}")
        return index

    def fingerprint(self) -> str:
        """A hex sha256 of (url, size, mtime or etag) of every file involved.

        Stable while the files stay as they are; changes when any of them is
        rewritten or touched. Costs one ``stat`` per file, no data is read.
        """
        digest = hashlib.sha256()
        for stamp in self.stamps():
            digest.update(f"{stamp.url}\0{stamp.size}\0{stamp.version}\n".encode())
        return digest.hexdigest()

    def summary(self, *, ranges: bool = True) -> DatasetSummary:
        """Fields with their ranges over all time steps, bounds, dimensions, sizes.

        Reads every time step once (a vector's range is that of its magnitude);
        a uniform grid chunk by chunk, so never a whole step in memory. The
        result is kept until :meth:`fingerprint` changes. ``ranges=False``
        reads no data of a uniform grid: its ranges are then (nan, nan).

        Example:
            >>> open_dataset("run.zarr").summary(ranges=False).field("f").range  # doctest: +SKIP
            (nan, nan)
        """
        if not ranges and self._chunked_fields():
            return self._volume_summary(ranges=False)
        fingerprint = self.fingerprint()
        if self._summary is not None and self._summary[0] == fingerprint:
            return self._summary[1]
        summary = self._volume_summary(ranges=True) if self._chunked_fields() else self._compute_summary()
        self._summary = (fingerprint, summary)
        return summary

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.source!r} steps={self.n_steps}>"

    # -- helpers -------------------------------------------------------------
    def _chunked_fields(self) -> list[str]:
        """The point fields, when every field can be read chunk by chunk (a uniform grid without cell fields)."""
        if not self.is_volume:
            return []
        points, cells = self._field_names()
        return [] if set(cells) - set(points) else list(points)

    def _volume_summary(self, *, ranges: bool) -> DatasetSummary:
        """The summary of a uniform grid from its headers, with ranges reduced chunk by chunk (threads)."""
        import dask
        import dask.array as da

        names = self._chunked_fields()
        volumes = {name: self.volume(0, name) for name in names}
        found = {name: [math.inf, -math.inf] for name in names}
        for step in range(self.n_steps if ranges else 0):
            extremes = []
            for name in names:
                data = (volumes[name] if step == 0 else self.volume(step, name)).data
                if data.ndim == 4:  # a vector: the range of its magnitude, as VTK gives it
                    data = da.sqrt((data.astype(np.float64) ** 2).sum(axis=-1))
                extremes += [da.nanmin(data), da.nanmax(data)]
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN chunk: its min is NaN
                values = dask.compute(*extremes, scheduler="threads")
            for name, lo, hi in zip(names, values[0::2], values[1::2]):
                if not (math.isnan(lo) or math.isnan(hi)):
                    found[name] = [min(found[name][0], float(lo)), max(found[name][1], float(hi))]
        fields = [
            FieldSummary(name, "point", volumes[name].components, volumes[name].data.dtype.name,
                         tuple(found[name]) if found[name][0] <= found[name][1] else (math.nan, math.nan))
            for name in names
        ]
        first = volumes[names[0]]
        dims = first.dimensions
        return DatasetSummary(
            source=self.source, format=self.format, kind="ImageData", fields=fields,
            bounds=tuple(float(b) for b in first.bounds), dimensions=tuple(dims),  # type: ignore[arg-type]
            n_points=math.prod(dims), n_cells=math.prod(max(d - 1, 1) for d in dims),
            time_values=list(self.time_values), nbytes=self.nbytes,
        )

    def _compute_summary(self) -> DatasetSummary:
        ranges: dict[tuple[str, str], list] = {}
        bounds = [math.inf, -math.inf] * 3
        first = None
        for step in range(self.n_steps):
            mesh = self.read(step)
            if first is None:
                first = mesh
            b = mesh.GetBounds()
            if b[0] <= b[1]:
                for axis in range(3):
                    bounds[2 * axis] = min(bounds[2 * axis], b[2 * axis])
                    bounds[2 * axis + 1] = max(bounds[2 * axis + 1], b[2 * axis + 1])
            for association, data in (("point", mesh.GetPointData()), ("cell", mesh.GetCellData())):
                for i in range(data.GetNumberOfArrays()):
                    array = data.GetArray(i)  # None for string/variant arrays
                    if array is None or not array.GetName():
                        continue
                    lo, hi = array_range(array)
                    entry = ranges.setdefault((association, array.GetName()), [
                        math.inf, -math.inf, array.GetNumberOfComponents(),
                        np.dtype(get_numpy_array_type(array.GetDataType())).name])
                    entry[0] = min(entry[0], lo)
                    entry[1] = max(entry[1], hi)
        assert first is not None
        fields = [
            FieldSummary(name, association, comps, dtype,
                         (lo, hi) if lo <= hi else (math.nan, math.nan))
            for (association, name), (lo, hi, comps, dtype) in ranges.items()
        ]
        fields.sort(key=lambda f: f.association != "point")  # stable: point fields first
        kind = first.GetClassName().removeprefix("vtk")
        dims = None
        if kind in _KINDS_WITH_DIMENSIONS:
            extent = first.GetExtent()
            dims = tuple(int(extent[2 * a + 1] - extent[2 * a] + 1) for a in range(3))
        if bounds[0] > bounds[1]:
            bounds = [0.0] * 6
        return DatasetSummary(
            source=self.source,
            format=self.format,
            kind=kind,
            fields=fields,
            bounds=tuple(float(b) for b in bounds),  # type: ignore[arg-type]
            dimensions=dims,  # type: ignore[arg-type]
            n_points=int(first.GetNumberOfPoints()),
            n_cells=int(first.GetNumberOfCells()),
            time_values=list(self.time_values),
            nbytes=self.nbytes,
        )


def array_range(array) -> tuple[float, float]:
    """(min, max) of a vtkDataArray ignoring NaN; the magnitude's for vectors.

    Returns (inf, -inf) when there is no finite value.
    """
    if array.GetNumberOfTuples() == 0:
        return math.inf, -math.inf
    lo, hi = array.GetRange(-1 if array.GetNumberOfComponents() > 1 else 0)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        return math.inf, -math.inf
    return float(lo), float(hi)
