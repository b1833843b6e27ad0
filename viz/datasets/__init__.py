"""Open simulation output (VTK XML and partitioned VTK, .pvd series, VTKHDF, Exodus II,
OpenFOAM cases, NetCDF/HDF5, Zarr, raw volumes; local paths or fsspec URLs).

Example:
    >>> from prefect_hpcviz.viz.datasets import open_dataset, write_synthetic  # doctest: +SKIP
    >>> ds = open_dataset(write_synthetic("demo-data", shape=(64, 64, 64)))     # doctest: +SKIP
    >>> ds.summary().field("pressure").range                                      # doctest: +SKIP
"""

from .base import Dataset
from .formats import SUPPORTED_FORMATS
from .opening import open_dataset, summarize
from .summary import DatasetSummary, FieldSummary
from .synthetic import write_synthetic

__all__ = [
    "SUPPORTED_FORMATS",
    "Dataset",
    "DatasetSummary",
    "FieldSummary",
    "open_dataset",
    "summarize",
    "write_synthetic",
]
