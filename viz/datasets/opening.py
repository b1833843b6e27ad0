"""open_dataset and summarize: the entry points that pick a reader."""

from __future__ import annotations

import os

from .base import Dataset
from .formats import detect_format
from .location import resolve_location
from .summary import DatasetSummary


def open_dataset(source: str | os.PathLike | Dataset, *, storage_options: dict | None = None) -> Dataset:
    """Open simulation output for reading: a file, a .pvd series, NetCDF or Zarr.

    Only headers are read here; data is read by :meth:`Dataset.read`.

    Args:
        source: a local path, a ``file://`` URL, or any fsspec URL
            (``az://container/run/sim.pvd``, ``s3://...``, ``memory://...``).
            Supported: .vti .vtu .vtp .vts single files, .pvd series, NetCDF
            (.nc), Zarr stores (v2 or v3 directories). A Dataset is returned as it is.
        storage_options: passed to fsspec for remote URLs (credentials, endpoints).

    Raises:
        InputError: missing path, unknown format, unreadable or truncated file,
            a .pvd listing a missing file.

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
    if fmt == "pvd":
        from .series import VtkSeriesDataset

        series = VtkSeriesDataset(location)
        series.field_names()  # reads the first piece's header: fail early on a broken series
        return series
    if fmt in ("netcdf", "zarr"):
        from .xarray_volume import XarrayVolumeDataset

        return XarrayVolumeDataset(location, fmt)
    from .vtk_xml import VtkFileDataset

    dataset = VtkFileDataset(location, fmt)
    dataset.field_names()  # reads the header: a truncated or foreign file fails here, not later
    return dataset


def summarize(source: str | os.PathLike, **kwargs) -> DatasetSummary:
    """``open_dataset(source, **kwargs).summary()``: fields, ranges, bounds, time steps, size.

    Example:
        >>> s = summarize("sim/simulation.pvd")                 # doctest: +SKIP
        >>> s.kind, s.dimensions, s.field("velocity").components  # doctest: +SKIP
        ('ImageData', (192, 192, 192), 3)
    """
    return open_dataset(source, **kwargs).summary()
