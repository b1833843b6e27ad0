"""open_dataset and summarize: the entry points that pick a reader."""

from __future__ import annotations

import os
from collections.abc import Callable

from .base import Dataset
from .formats import detect_format
from .location import Location, resolve_location
from .summary import DatasetSummary


def open_dataset(source: str | os.PathLike | Dataset, *, storage_options: dict | None = None) -> Dataset:
    """Open simulation output for reading: a file, a series, a case folder or a store.

    Only headers are read here; data is read by :meth:`Dataset.read`.

    Args:
        source: a local path, a ``file://`` URL, or any fsspec URL
            (``az://container/run/sim.pvd``, ``s3://...``, ``memory://...``).
            Supported: .vti .vtu .vtp .vts single files, partitioned .pvti
            .pvtu .pvtp with their pieces, .pvd series, VTKHDF (.vtkhdf, or
            .hdf/.h5 with a /VTKHDF group), Exodus II (.exo .e), OpenFOAM
            case folders (or their .foam file), NetCDF (.nc) and HDF5 (.h5)
            through xarray, Zarr stores (v2 or v3 directories), raw volumes
            (.raw with a .raw.json header). A Dataset is returned as it is.
        storage_options: passed to fsspec for remote URLs (credentials, endpoints).

    Raises:
        InputError: missing path, unknown format, unreadable or truncated file,
            a .pvd listing a missing file, a missing piece of a partitioned file.

    Example:
        >>> ds = open_dataset("sim/simulation.pvd")    # doctest: +SKIP
        >>> ds.format, len(ds.time_values)               # doctest: +SKIP
        ('pvd', 6)
        >>> ds = open_dataset("az://runs/ocean.zarr", storage_options={"account_name": "x"})  # doctest: +SKIP
    """
    if isinstance(source, Dataset):
        return source
    location = resolve_location(source, storage_options).require()
    fmt = detect_format(location)
    dataset = _READERS[fmt](location, fmt)
    dataset.field_names()  # reads the header: a truncated or foreign file fails here, not later
    return dataset


def _series(location: Location, fmt: str) -> Dataset:
    from .series import VtkSeriesDataset

    return VtkSeriesDataset(location)


def _xarray(location: Location, fmt: str) -> Dataset:
    from .xarray_volume import XarrayVolumeDataset

    return XarrayVolumeDataset(location, fmt)


def _vtk_xml(location: Location, fmt: str) -> Dataset:
    from .vtk_xml import VtkFileDataset

    return VtkFileDataset(location, fmt)


def _partitioned(location: Location, fmt: str) -> Dataset:
    from .partitioned import PartitionedDataset

    return PartitionedDataset(location, fmt)


def _vtkhdf(location: Location, fmt: str) -> Dataset:
    from .vtkhdf import VtkHdfDataset

    return VtkHdfDataset(location)


def _exodus(location: Location, fmt: str) -> Dataset:
    from .exodus import ExodusDataset

    return ExodusDataset(location)


def _openfoam(location: Location, fmt: str) -> Dataset:
    from .openfoam import OpenFoamDataset

    return OpenFoamDataset(location)


def _raw(location: Location, fmt: str) -> Dataset:
    from .raw_volume import RawVolumeDataset

    return RawVolumeDataset(location)


#: Format name (from :func:`detect_format`) -> how to open it. Readers are imported on first use.
_READERS: dict[str, Callable[[Location, str], Dataset]] = {
    "vti": _vtk_xml, "vtu": _vtk_xml, "vtp": _vtk_xml, "vts": _vtk_xml,
    "pvti": _partitioned, "pvtu": _partitioned, "pvtp": _partitioned,
    "pvd": _series,
    "vtkhdf": _vtkhdf,
    "netcdf": _xarray, "hdf5": _xarray, "zarr": _xarray,
    "exodus": _exodus,
    "openfoam": _openfoam,
    "raw": _raw,
}


def summarize(source: str | os.PathLike, *, ranges: bool = True, **kwargs) -> DatasetSummary:
    """``open_dataset(source, **kwargs).summary(ranges=ranges)``: fields, ranges, bounds, time steps, size.

    ``ranges=False`` reads no data of a uniform grid (its ranges are then nan).

    Example:
        >>> s = summarize("sim/simulation.pvd")                 # doctest: +SKIP
        >>> s.kind, s.dimensions, s.field("velocity").components  # doctest: +SKIP
        ('ImageData', (192, 192, 192), 3)
    """
    return open_dataset(source, **kwargs).summary(ranges=ranges)
