"""NetCDF files and Zarr stores read through xarray as uniform volumes.

Every data variable on three 1-D dimensions (optionally with a leading time
dimension) becomes a point field of a ``pyvista.ImageData``; the time
dimension becomes the time steps. Coordinates must be uniformly spaced
(descending ones are flipped); a dimension without a coordinate variable
counts 0, 1, 2, ... Dimensions named like x/y/z (lon/lat/depth, ...) are put
in x, y, z order; otherwise the last dimension is x and the first is z.
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import dask
import dask.array as da
import numpy as np
import pyvista
import xarray as xr

from ..errors import InputError
from .adlfs_exit import close_adlfs_at_exit
from .base import Dataset
from .location import FileStamp, Location
from .decode_errors import NamedDecodeErrors
from .volume import ChunkedVolume, chunks_for
from .zarr_boxes import ZarrBoxes

_FIX = "re-export it, or check the path"
_TIME_NAMES = {"time", "t", "times", "step", "timestep"}
_AXIS_NAMES = {
    "x": {"x", "lon", "longitude", "xc", "easting"},
    "y": {"y", "lat", "latitude", "yc", "northing"},
    "z": {"z", "depth", "level", "lev", "height", "altitude", "zc", "plev"},
}


@dataclass(frozen=True)
class VolumeLayout:
    """How the variables of an xarray dataset map onto one ImageData."""

    variables: tuple[str, ...]
    time_dim: str | None
    order: tuple[str, str, str]  # dims in storage order (z, y, x): the last one varies fastest
    flip: tuple[bool, bool, bool]  # per entry of ``order``: coordinate was descending
    origin: tuple[float, float, float]  # x, y, z
    spacing: tuple[float, float, float]  # x, y, z
    dimensions: tuple[int, int, int]  # x, y, z


class XarrayVolumeDataset(Dataset):
    """A NetCDF file or Zarr store whose 3-D variables share one uniform grid.

    Example:
        >>> ds = open_dataset("ocean.nc")   # doctest: +SKIP
        >>> ds.read(0).dimensions             # doctest: +SKIP
        (360, 180, 40)
    """

    def __init__(self, location: Location, fmt: str) -> None:
        self.format = fmt
        self.location = location  # needed by _open before Dataset.__init__ runs
        self._consolidated: bool | None = None
        with self._open() as xds:
            self.layout = plan_volume(xds, location.url)
            times = _time_values(xds, self.layout.time_dim)
        super().__init__(location, times)

    def stamps(self) -> list[FileStamp]:
        return self.location.stamps()

    def _field_names(self) -> tuple[list[str], list[str]]:
        return list(self.layout.variables), []

    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        layout = self.layout
        grid = pyvista.ImageData(dimensions=layout.dimensions, spacing=layout.spacing, origin=layout.origin)
        names = [v for v in layout.variables if fields is None or v in fields]
        with self._open() as xds:
            for name in names:
                var = xds[name]
                if layout.time_dim is not None:
                    var = var.isel({layout.time_dim: step})
                var = var.transpose(*layout.order)
                values = NamedDecodeErrors(var, self.source, name, layout.order)[...]
                flips = tuple(slice(None, None, -1) if f else slice(None) for f in layout.flip)
                if any(layout.flip):
                    values = values[flips]
                grid.point_data[name] = np.ascontiguousarray(values).reshape(-1)
        return grid

    is_volume = True

    def _volume(self, step: int, field: str, chunk_bytes: int | None) -> ChunkedVolume:
        """Lazy: each dask chunk reads its own box (whole storage chunks) from the open store."""
        layout = self.layout
        # CF decoding (fill value -> NaN, scale/offset) is a full extra pass over
        # every chunk (it doubled the read time of a float32 Zarr store); skip it
        # when it cannot change a value.
        var = self._open_lazy(mask_and_scale=False)[field]
        if not _decoding_is_identity(var):
            var = self._open_lazy()[field]
        native = _native_chunks(var)
        spatial_native = tuple(native.get(d, var.sizes[d]) for d in layout.order)
        shape = tuple(var.sizes[d] for d in layout.order)
        chunks = chunks_for(shape, var.dtype, native=spatial_native, target_bytes=chunk_bytes)
        stored = tuple(str(d) for d in var.dims)
        if (self.format == "zarr" and _decoding_is_identity(var)
                and stored[-3:] == tuple(layout.order) and len(stored) == 3 + (layout.time_dim is not None)):
            direct = ZarrBoxes(self.location.url, field, time_index=step if layout.time_dim else None,
                               storage_options=self.location.storage_options or None)
            source = NamedDecodeErrors(direct, self.source, field, layout.order)
        else:
            if layout.time_dim is not None:
                var = var.isel({layout.time_dim: step})
            var = var.transpose(*layout.order)
            source = NamedDecodeErrors(var, self.source, field, layout.order)
        token = dask.base.tokenize(self.fingerprint(), field, step, chunks)
        data = da.from_array(source, chunks=chunks, asarray=False, fancy=False, name=f"hpcviz-xarray-{token}")
        flips = tuple(slice(None, None, -1) if f else slice(None) for f in layout.flip)
        if any(layout.flip):
            data = data[flips]
        return ChunkedVolume(field, data, layout.origin, layout.spacing)

    def _open_lazy(self, mask_and_scale: bool = True) -> xr.Dataset:
        """The store opened lazily (left open: dask tasks read boxes from it later)."""
        loc = self.location
        try:
            if self.format == "zarr":
                if self._consolidated is None:
                    self._consolidated = _zarr_is_consolidated(loc)
                options = {} if loc.is_local else _remote_zarr_options(loc)
                return xr.open_dataset(loc.url, engine="zarr", chunks=None, cache=False,
                                       consolidated=self._consolidated, mask_and_scale=mask_and_scale,
                                       **options)
            return _open_netcdf(loc, self.format, chunks=None, cache=False, mask_and_scale=mask_and_scale)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend failure means an unreadable input
            raise InputError(loc.url, f"cannot be read as {self.format} ({type(exc).__name__}: {exc})",
                             _FIX) from exc

    @contextmanager
    def _open(self) -> Iterator[xr.Dataset]:
        loc = self.location
        try:
            if self.format == "zarr":
                if self._consolidated is None:
                    self._consolidated = _zarr_is_consolidated(loc)
                options = {} if loc.is_local else _remote_zarr_options(loc)
                xds = xr.open_dataset(loc.url, engine="zarr", chunks=None, cache=False,
                                      consolidated=self._consolidated, **options)
            else:
                xds = _open_netcdf(loc, self.format, chunks=None, cache=False)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend failure means an unreadable input
            raise InputError(loc.url, f"cannot be read as {self.format} ({type(exc).__name__}: {exc})",
                             _FIX) from exc
        try:
            yield xds
        finally:
            xds.close()


def _native_chunks(var: xr.DataArray) -> dict[str, int]:
    """The storage chunk size per dimension (Zarr ``chunks``, NetCDF ``chunksizes``); {} if unchunked."""
    sizes = var.encoding.get("preferred_chunks")
    if sizes:
        return {str(k): int(v) for k, v in sizes.items()}
    chunks = var.encoding.get("chunks") or var.encoding.get("chunksizes")
    if chunks:
        return {str(d): int(c) for d, c in zip(var.dims, chunks)}
    return {}


def _zarr_is_consolidated(location: Location) -> bool:
    """Whether a Zarr store has consolidated metadata (v2 .zmetadata, v3 inside zarr.json)."""
    if location.child(".zmetadata").exists():
        return True
    root = location.child("zarr.json")
    if not root.exists():
        return False
    try:
        with root.open() as f:
            return bool(json.load(f).get("consolidated_metadata"))
    except (OSError, ValueError):
        return False


#: fsspec read-ahead block for NetCDF-4/HDF5 files streamed from a URL.
STREAM_BLOCK_BYTES = 2 << 20


def _decoding_is_identity(var: xr.DataArray) -> bool:
    """True when CF mask-and-scale leaves every value as it is (no scale, offset, or non-NaN fill)."""
    attrs = var.attrs
    if any(key in attrs for key in ("scale_factor", "add_offset", "missing_value")):
        return False
    fill = attrs.get("_FillValue")
    if fill is None:
        return True
    try:
        return bool(np.isnan(fill)) and np.issubdtype(var.dtype, np.floating)
    except TypeError:
        return False


def _remote_zarr_options(location: Location) -> dict:
    """xarray's keywords for a Zarr store behind fsspec; its Blob clients are closed cleanly at exit."""
    close_adlfs_at_exit()  # zarr makes its own adlfs file system (on a Dask worker too)
    return {"storage_options": location.storage_options or None}


def _open_netcdf(location: Location, fmt: str, **kwargs) -> xr.Dataset:
    """Open NetCDF or HDF5 with xarray: local files directly, remote HDF5 streamed by ranges.

    Remote NetCDF-4/HDF5 is read through fsspec in blocks of
    :data:`STREAM_BLOCK_BYTES` (h5netcdf; no download). Remote NetCDF-3 has no
    range reader and is copied once into the bounded local cache. Plain HDF5
    (format "hdf5") gets phony dimension names where it has no dimension scales.
    """
    if location.is_local:
        path = location.url
        engine = "h5netcdf" if fmt == "hdf5" else _netcdf_engine(path, location.url)
    else:
        magic = location.fs.cat_file(location.fs_path, start=0, end=8)
        if magic.startswith(b"\x89HDF"):
            kwargs.update(storage_options=location.storage_options or None,
                          open_kwargs={"cache_type": "blockcache", "block_size": STREAM_BLOCK_BYTES})
            path, engine = location.url, "h5netcdf"
        else:
            path = location.local_path()
            engine = _netcdf_engine(path, location.url)
    if engine == "h5netcdf":
        kwargs["phony_dims"] = "sort"
    return xr.open_dataset(path, engine=engine, **kwargs)


def _netcdf_engine(path: str, name: str) -> str:
    """The xarray engine for a NetCDF file, chosen from its magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"\x89HDF"):
        candidates = [("netcdf4", "netCDF4"), ("h5netcdf", "h5py")]
    elif magic.startswith(b"CDF"):
        candidates = [("netcdf4", "netCDF4"), ("scipy", "scipy")]
    else:
        raise InputError(name, "truncated or not a NetCDF file (neither a NetCDF-3 nor an HDF5 header)", _FIX)
    for engine, module in candidates:
        if importlib.util.find_spec(module) is not None:
            return engine
    raise InputError(name, "no NetCDF engine is installed for this file",
                     f"install one of: {', '.join(m for _, m in candidates)}")


def _is_time(xds: xr.Dataset, dim: str) -> bool:
    if dim.lower() in _TIME_NAMES:
        return True
    if dim in xds.coords:
        coord = xds.coords[dim]
        if np.issubdtype(coord.dtype, np.datetime64) or np.issubdtype(coord.dtype, np.timedelta64):
            return True
        if str(coord.attrs.get("axis", "")).upper() == "T" or coord.attrs.get("standard_name") == "time":
            return True
    return False


def _spatial_order(xds: xr.Dataset, dims: tuple[str, str, str]) -> tuple[str, str, str]:
    """Dims in (z, y, x) order when their names say which is which, else as stored."""
    found: dict[str, str] = {}
    for dim in dims:
        axis_attr = str(xds.coords[dim].attrs.get("axis", "")).lower() if dim in xds.coords else ""
        for axis, names in _AXIS_NAMES.items():
            if axis_attr == axis or dim.lower() in names:
                found.setdefault(axis, dim)
    if len(found) == 3 and len(set(found.values())) == 3:
        return found["z"], found["y"], found["x"]
    return dims


def _axis(xds: xr.Dataset, dim: str, source: str) -> tuple[float, float, bool]:
    """(origin, spacing, descending) of one spatial dimension."""
    n = xds.sizes[dim]
    if dim not in xds.coords:
        return 0.0, 1.0, False
    coord = xds.coords[dim]
    if coord.ndim != 1 or not np.issubdtype(coord.dtype, np.number):
        raise InputError(source, f"coordinate {dim!r} is not a 1-D numeric coordinate",
                         "give the volume 1-D numeric coordinates")
    values = np.asarray(coord.values, dtype=np.float64)
    if n == 1:
        return float(values[0]), 1.0, False
    spacing = (values[-1] - values[0]) / (n - 1)
    steps = np.diff(values)
    if spacing == 0 or not np.all(np.isfinite(steps)) or np.max(np.abs(steps - spacing)) > 1e-3 * abs(spacing):
        raise InputError(source, f"coordinate {dim!r} is not uniformly spaced "
                         f"(steps from {steps.min():g} to {steps.max():g})",
                         "resample the data onto a uniform grid before visualizing it")
    descending = spacing < 0
    return float(values.min()), float(abs(spacing)), bool(descending)


def plan_volume(xds: xr.Dataset, source: str) -> VolumeLayout:
    """Choose the variables and grid: the dims of the first 3-D (or time + 3-D) variable.

    Raises InputError when no data variable fits or a coordinate is not uniform.
    """
    chosen: tuple[str, ...] | None = None
    variables: list[str] = []
    for name, var in xds.data_vars.items():
        if not (np.issubdtype(var.dtype, np.number) or var.dtype == bool):
            continue
        dims = tuple(str(d) for d in var.dims)
        if len(dims) == 4 and not any(_is_time(xds, d) for d in dims[1:]):
            pass
        elif len(dims) == 3 and not any(_is_time(xds, d) for d in dims):
            pass
        else:
            continue
        if chosen is None:
            chosen = dims
        if dims == chosen:
            variables.append(str(name))
    if chosen is None:
        described = ", ".join(f"{n}{tuple(v.dims)}" for n, v in xds.data_vars.items()) or "none"
        raise InputError(source, "has no data variable on three 1-D dimensions (optionally with time "
                         f"first); variables: {described}", "store 3-D fields, e.g. dims (time, z, y, x)")
    time_dim = chosen[0] if len(chosen) == 4 else None
    spatial = chosen[1:] if time_dim else chosen
    order = _spatial_order(xds, spatial)  # type: ignore[arg-type]
    axes = [_axis(xds, d, source) for d in order]  # z, y, x
    x, y, z = axes[2], axes[1], axes[0]
    return VolumeLayout(
        variables=tuple(variables),
        time_dim=time_dim,
        order=order,
        flip=tuple(a[2] for a in axes),  # type: ignore[arg-type]
        origin=(x[0], y[0], z[0]),
        spacing=(x[1], y[1], z[1]),
        dimensions=(xds.sizes[order[2]], xds.sizes[order[1]], xds.sizes[order[0]]),
    )


def _time_values(xds: xr.Dataset, time_dim: str | None) -> list[float]:
    """Time values as floats; datetimes and timedeltas in seconds since the first step."""
    if time_dim is None:
        return [0.0]
    n = xds.sizes[time_dim]
    if time_dim not in xds.coords:
        return [float(i) for i in range(n)]
    values = np.asarray(xds.coords[time_dim].values)
    if np.issubdtype(values.dtype, np.datetime64) or np.issubdtype(values.dtype, np.timedelta64):
        seconds = (values - values[0]) / np.timedelta64(1, "s")
        return [float(s) for s in seconds]
    if np.issubdtype(values.dtype, np.number):
        return [float(v) for v in values]
    return [float(i) for i in range(n)]
