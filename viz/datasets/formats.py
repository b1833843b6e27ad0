"""Which reader handles a path: by extension, by content (HDF5) or by layout (folders)."""

from __future__ import annotations

from ..errors import InputError
from .location import Location

#: File extension -> format name, for every format :func:`open_dataset` reads.
#: "hdf5" extensions are looked into: a file with a /VTKHDF group is "vtkhdf".
SUPPORTED_FORMATS: dict[str, str] = {
    ".vti": "vti",
    ".vtu": "vtu",
    ".vtp": "vtp",
    ".vts": "vts",
    ".pvti": "pvti",
    ".pvtu": "pvtu",
    ".pvtp": "pvtp",
    ".pvd": "pvd",
    ".vtkhdf": "vtkhdf",
    ".hdf": "hdf5",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".nc": "netcdf",
    ".nc4": "netcdf",
    ".netcdf": "netcdf",
    ".cdf": "netcdf",
    ".zarr": "zarr",
    ".exo": "exodus",
    ".e": "exodus",
    ".ex2": "exodus",
    ".exii": "exodus",
    ".foam": "openfoam",
    ".raw": "raw",
}

#: Files whose presence marks a directory as a Zarr store (v2 and v3).
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")
#: The file that marks a directory as an OpenFOAM case.
OPENFOAM_MARKER = "system/controlDict"


def supported_list() -> str:
    """Human-readable list of what can be opened."""
    return ", ".join(SUPPORTED_FORMATS) + ", Zarr directories and OpenFOAM case directories"


def detect_format(location: Location) -> str:
    """The format name of an existing location, or InputError listing supported formats.

    Example:
        >>> detect_format(resolve_location("sim/simulation.pvd"))  # doctest: +SKIP
        'pvd'
        >>> detect_format(resolve_location("runs/cavity"))         # doctest: +SKIP
        'openfoam'
    """
    if location.is_dir():
        if location.suffix == ".zarr" or any(location.child(m).exists() for m in ZARR_MARKERS):
            return "zarr"
        if location.child(OPENFOAM_MARKER).exists():
            return "openfoam"
        raise InputError(location.url, "is a directory but neither a Zarr store (no zarr.json, .zgroup or "
                         f".zarray inside) nor an OpenFOAM case (no {OPENFOAM_MARKER}); supported formats: "
                         f"{supported_list()}",
                         "point to a file such as a .pvd, .vti or .nc, to a Zarr store or to an OpenFOAM case")
    name = location.name.lower()
    if name.endswith((".raw.json", ".raw.yaml", ".raw.yml")):
        return "raw"
    fmt = SUPPORTED_FORMATS.get(location.suffix)
    if fmt is None or fmt == "zarr":
        what = f"unknown format {location.suffix!r}" if location.suffix else "no file extension"
        raise InputError(location.url, f"{what}; supported formats: {supported_list()}",
                         "convert it to one of them, or rename it if the extension is wrong")
    if fmt in ("hdf5", "vtkhdf"):
        from .vtkhdf import is_vtkhdf

        if is_vtkhdf(location):
            return "vtkhdf"
        if fmt == "vtkhdf":
            raise InputError(location.url, "truncated or not a VTKHDF file (no /VTKHDF group in an HDF5 file)",
                             "re-export it with VTK's vtkHDFWriter, or check the path")
    return fmt
