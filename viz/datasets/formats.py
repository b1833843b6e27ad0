"""Which reader handles a path: by extension, or by content for Zarr directories."""

from __future__ import annotations

from ..errors import InputError
from .location import Location

#: File extension -> format name, for every format :func:`open_dataset` reads.
SUPPORTED_FORMATS: dict[str, str] = {
    ".vti": "vti",
    ".vtu": "vtu",
    ".vtp": "vtp",
    ".vts": "vts",
    ".pvd": "pvd",
    ".nc": "netcdf",
    ".nc4": "netcdf",
    ".netcdf": "netcdf",
    ".cdf": "netcdf",
    ".zarr": "zarr",
}

#: Files whose presence marks a directory as a Zarr store (v2 and v3).
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def supported_list() -> str:
    """Human-readable list of what can be opened."""
    return ", ".join(SUPPORTED_FORMATS) + " and Zarr directories"


def detect_format(location: Location) -> str:
    """The format name of an existing location, or InputError listing supported formats.

    Example:
        >>> detect_format(resolve_location("sim/simulation.pvd"))  # doctest: +SKIP
        'pvd'
    """
    if location.is_dir():
        if location.suffix == ".zarr" or any(location.child(m).exists() for m in ZARR_MARKERS):
            return "zarr"
        raise InputError(location.url, "is a directory but not a Zarr store (no zarr.json, .zgroup or "
                         f".zarray inside); supported formats: {supported_list()}",
                         "point to a file such as a .pvd, .vti or .nc, or to a Zarr store")
    fmt = SUPPORTED_FORMATS.get(location.suffix)
    if fmt is None or fmt == "zarr":
        what = f"unknown format {location.suffix!r}" if location.suffix else "no file extension"
        raise InputError(location.url, f"{what}; supported formats: {supported_list()}",
                         "convert it to one of them, or rename it if the extension is wrong")
    return fmt
