"""What datasets a folder or container holds: format, size, time steps, modification time.

Walks a local folder or an fsspec location (``az://container/prefix``, ...)
and lists every dataset ``open_dataset`` reads: ``.pvd`` series and
partitioned ``.pvti``/``.pvtu`` files (their pieces are not listed again),
single files of every supported format, and Zarr stores and OpenFOAM cases
(not descended into). A file that looks like a dataset but cannot be
opened is listed with the reason, so a broken output is visible too.

Example:
    >>> for item in list_datasets("/scratch/runs"):               # doctest: +SKIP
    ...     print(item.name, item.format, item.time_steps, item.nbytes)
    run1/simulation.pvd pvd 6 679477248
    ocean.zarr zarr 12 104857600
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .datasets import open_dataset
from .datasets.formats import OPENFOAM_MARKER, SUPPORTED_FORMATS, ZARR_MARKERS
from .datasets.location import resolve_location
from .errors import HpcvizError, InputError


#: Formats whose index file lists other files (pieces, time steps, a header's data file): those
#: files are part of it, not datasets of their own.
MULTI_FILE_FORMATS = ("pvd", "pvti", "pvtu", "pvtp", "raw")


@dataclass(frozen=True)
class DatasetListing:
    """One dataset found under a location.

    Attributes:
        url: what ``open_dataset`` opens (a local path or an fsspec URL).
        name: the path relative to the listed location.
        format: ``pvd``, ``vti``, ``netcdf``, ``zarr``, ...
        nbytes: bytes of every file involved.
        time_steps: number of time steps (0 when unreadable).
        modified: the newest modification time of its files (ISO 8601, UTC), or ''.
        error: why it cannot be opened ('' when it can).
    """

    url: str
    name: str
    format: str
    nbytes: int
    time_steps: int
    modified: str
    error: str = ""

    @property
    def readable(self) -> bool:
        """True when ``open_dataset`` opens it."""
        return not self.error


def list_datasets(location: str | os.PathLike, *, storage_options: dict[str, Any] | None = None) -> list[DatasetListing]:
    """Every dataset under ``location``, sorted by name.

    Args:
        location: a local folder, or an fsspec URL of a container/prefix
            (``az://runs``, ``az://runs/2026``).
        storage_options: fsspec options (credentials, endpoints) for remote locations.

    Raises:
        InputError: the location does not exist or is not a folder.

    Example:
        >>> [d.name for d in list_datasets("demo-data")]     # doctest: +SKIP
        ['simulation.pvd']
    """
    root = resolve_location(location, storage_options).require()
    if not root.is_dir():
        raise InputError(root.url, "is a file, not a folder or container", "give the folder that holds the datasets")
    fs, base = root.fs, root.fs_path.rstrip("/")
    infos: dict[str, dict[str, Any]] = {}
    candidates: list[str] = []
    for folder, dirs, files in fs.walk(base, detail=True):
        folder = folder.rstrip("/")
        for name in sorted(dirs):
            path = posixpath.join(folder, name)
            if (name.lower().endswith(".zarr") or any(fs.exists(posixpath.join(path, m)) for m in ZARR_MARKERS)
                    or fs.exists(posixpath.join(path, OPENFOAM_MARKER))):
                candidates.append(path)
                del dirs[name]  # a Zarr store or an OpenFOAM case is one dataset: do not list its files
        for name, info in files.items():
            path = posixpath.join(folder, name)
            infos[path] = info
            if SUPPORTED_FORMATS.get(posixpath.splitext(name)[1].lower()) not in (None, "zarr"):
                candidates.append(path)
    listings = [_listing(path, root, base, fs, infos, storage_options) for path in candidates]
    pieces = {stamp for item in listings if item.format in MULTI_FILE_FORMATS
              for stamp in _pieces(item, storage_options)}
    return sorted((item for item in listings if item.url not in pieces), key=lambda item: item.name)


def _url(path: str, root: Any, fs: Any) -> str:
    """A found path as a URL with the protocol the user wrote (``az://``, not adlfs' ``abfs://``)."""
    return path if root.is_local else f"{root.url.split('://', 1)[0]}://{path}"


def _listing(path: str, root: Any, base: str, fs: Any, infos: dict[str, dict[str, Any]],
             storage_options: dict[str, Any] | None) -> DatasetListing:
    url = _url(path, root, fs)
    name = posixpath.relpath(path, base) if path != base else posixpath.basename(path)
    try:
        dataset = open_dataset(url, storage_options=storage_options)
        stamps = dataset.stamps()
        modified = max((_modified(infos.get(fs._strip_protocol(s.url)) or _info(fs, s.url)) for s in stamps),
                       default="")
        nbytes = sum(s.size for s in stamps)
        if url not in {s.url for s in stamps}:  # a .pvd lists its pieces; count the index file too
            nbytes += int((infos.get(path) or {}).get("size") or 0)
        return DatasetListing(url, name, dataset.format, nbytes, dataset.n_steps, modified)
    except (HpcvizError, OSError, ValueError) as error:
        size = int((infos.get(path) or {}).get("size") or 0)
        return DatasetListing(url, name, SUPPORTED_FORMATS.get(posixpath.splitext(path)[1].lower(), "?"),
                              size, 0, _modified(infos.get(path) or {}), error=str(error))


def _pieces(item: DatasetListing, storage_options: dict[str, Any] | None) -> set[str]:
    """The files a readable multi-file dataset lists (they are not datasets of their own)."""
    if not item.readable:
        return set()
    return {s.url for s in open_dataset(item.url, storage_options=storage_options).stamps()} - {item.url}


def _info(fs: Any, url: str) -> dict[str, Any]:
    try:
        return fs.info(fs._strip_protocol(url))
    except (OSError, ValueError):
        return {}


def _modified(info: dict[str, Any]) -> str:
    """ISO 8601 (UTC, seconds) of a file's modification time from an fsspec info dict."""
    for key in ("mtime", "last_modified", "LastModified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            value = datetime.fromtimestamp(float(value), timezone.utc)
        elif isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return value
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return ""
