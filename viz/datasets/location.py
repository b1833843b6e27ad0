"""Where a dataset lives: a local path or an fsspec URL.

Local paths and ``file://`` URLs are used as they are (the fast path: no
fsspec call on the way to a VTK reader). Other protocols (``az://``,
``s3://``, ``memory://``, ...) go through fsspec; whole-file formats are
copied once into a local cache whose entry is keyed by (url, size, version),
so a changed remote file is fetched again and a half-finished download is
never mistaken for a cached one (see cache.py; the cache is bounded).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import InputError
from .adlfs_exit import close_adlfs_at_exit
from .cache import WholeFileCache

_VERSION_KEYS = ("ETag", "etag", "version_id", "VersionId", "mtime", "LastModified",
                 "last_modified", "updated", "created")


@dataclass(frozen=True)
class FileStamp:
    """What identifies one stored file version: url, size and mtime/etag."""

    url: str
    size: int
    version: str


@dataclass(frozen=True)
class Location:
    """A file or directory, local or behind fsspec.

    ``url`` is an absolute local path for local data, otherwise the fsspec URL
    (``protocol://path``). Picklable, so datasets can travel to Dask workers.

    Example:
        >>> loc = resolve_location("/tmp")
        >>> loc.is_local, loc.url
        (True, '/tmp')
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)  # may hold keys

    # -- identity -----------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """True for a path on this machine's file system."""
        return "://" not in self.url

    @property
    def name(self) -> str:
        """The last path component, e.g. ``simulation.pvd``."""
        return posixpath.basename(self.url.rstrip("/")) if not self.is_local else Path(self.url).name

    @property
    def suffix(self) -> str:
        """Lower-case extension with the dot, e.g. ``.vti``; '' when none."""
        return posixpath.splitext(self.name)[1].lower()

    def sibling(self, relative: str) -> Location:
        """The location of ``relative`` resolved against this file's folder.

        Absolute paths and URLs are returned as they are.
        """
        if "://" in relative:
            return Location(relative, self.storage_options)
        if self.is_local:
            path = Path(relative)
            if not path.is_absolute():
                path = Path(self.url).parent / path
            return Location(os.path.normpath(path), self.storage_options)
        protocol, path = self.url.split("://", 1)
        joined = relative if relative.startswith("/") else posixpath.join(posixpath.dirname(path), relative)
        return Location(f"{protocol}://{posixpath.normpath(joined)}", self.storage_options)

    def child(self, name: str) -> Location:
        """The location of ``name`` inside this directory."""
        if self.is_local:
            return Location(os.path.join(self.url, name), self.storage_options)
        return Location(self.url.rstrip("/") + "/" + name, self.storage_options)

    # -- file system access -------------------------------------------------
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec file system (cached by fsspec per url and options)."""
        if self.is_local:
            return LocalFileSystem()
        return fsspec.core.url_to_fs(self.url, **self.storage_options)[0]

    @property
    def fs_path(self) -> str:
        """The path inside :attr:`fs`."""
        if self.is_local:
            return self.url
        return fsspec.core.url_to_fs(self.url, **self.storage_options)[1]

    def exists(self) -> bool:
        """Whether anything is stored here."""
        if self.is_local:
            return os.path.exists(self.url)
        return bool(self.fs.exists(self.fs_path))

    def is_dir(self) -> bool:
        """Whether this is a directory (or a prefix holding objects)."""
        if self.is_local:
            return os.path.isdir(self.url)
        return bool(self.fs.isdir(self.fs_path))

    def require(self, referenced_by: str | None = None) -> Location:
        """Return self, or raise InputError when nothing is stored here."""
        if not self.exists():
            problem = "no such file or directory"
            if referenced_by:
                problem += f" (referenced by {referenced_by})"
            raise InputError(self.url, problem, "check the path")
        return self

    def open(self) -> BinaryIO:
        """Open for binary reading."""
        if self.is_local:
            return open(self.url, "rb")
        return self.fs.open(self.fs_path, "rb")

    def stamp(self) -> FileStamp:
        """Size and version (mtime_ns locally, etag/mtime remotely) of this file."""
        try:
            if self.is_local:
                st = os.stat(self.url)
                return FileStamp(self.url, st.st_size, str(st.st_mtime_ns))
            return _remote_stamp(self.url, self.fs.info(self.fs_path))
        except FileNotFoundError:
            raise InputError(self.url, "no such file or directory", "check the path") from None

    def stamps(self) -> list[FileStamp]:
        """Stamps of this file, or of every file below this directory (sorted)."""
        if not self.is_dir():
            return [self.stamp()]
        if self.is_local:
            out = []
            for root, dirs, files in os.walk(self.url):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(root, name)
                    st = os.stat(path)
                    out.append(FileStamp(path, st.st_size, str(st.st_mtime_ns)))
            return out
        fs = self.fs
        found = fs.find(self.fs_path, detail=True)
        return [_remote_stamp(fs.unstrip_protocol(path), info) for path, info in sorted(found.items())]

    def local_path(self, cache: WholeFileCache | None = None) -> str:
        """A local file path holding this file's bytes.

        Local files are returned as they are. Remote files are downloaded once
        into the bounded :class:`WholeFileCache` (default: ``$HPCVIZ_CACHE_DIR``,
        at most ``$HPCVIZ_CACHE_MAX_BYTES``), written atomically, in an entry
        named after (url, size, version).

        Example:
            >>> resolve_location("az://runs/mesh.vtu").local_path()  # doctest: +SKIP
            '/home/me/.hpcviz/cache/fsspec/3f9a.../mesh.vtu'
        """
        if self.is_local:
            return self.url
        stamp = self.stamp()
        cache = cache or WholeFileCache()
        return cache.fetch_file((stamp.url, str(stamp.size), stamp.version), self.name or "data", stamp.size,
                                lambda tmp: self.fs.get_file(self.fs_path, tmp))

    def local_tree(self, cache: WholeFileCache | None = None) -> str:
        """A local folder holding a copy of this folder (for readers that need a directory).

        Local folders are returned as they are; remote ones are downloaded once
        into the bounded cache, keyed by the stamps of every file inside.

        Example:
            >>> resolve_location("az://runs/cavity").local_tree()  # doctest: +SKIP
            '/home/me/.hpcviz/cache/fsspec/77c1.../cavity'
        """
        if self.is_local:
            return self.url
        stamps = self.stamps()
        identity = [self.url] + [f"{s.url}:{s.size}:{s.version}" for s in stamps]
        base = self.fs_path.rstrip("/")
        fs = self.fs

        def download(tmp: str) -> None:
            for stamp in stamps:
                path = fs._strip_protocol(stamp.url)
                relative = posixpath.relpath(path, base)
                target = os.path.join(tmp, *relative.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                fs.get_file(path, target)

        return (cache or WholeFileCache()).fetch_tree(identity, self.name or "data", download)


def resolve_location(source: str | os.PathLike, storage_options: dict | None = None) -> Location:
    """Turn a user-given path or URL into a :class:`Location`.

    Local paths (and ``file://`` URLs) become absolute, resolved paths.

    Example:
        >>> resolve_location("file:///tmp/sim.pvd").url
        '/tmp/sim.pvd'
        >>> resolve_location("memory://bucket/sim.pvd").url
        'memory://bucket/sim.pvd'
    """
    options = dict(storage_options or {})
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "://" not in text and "::" not in text:
        return Location(str(Path(text).expanduser().resolve()), options)
    fs, path = fsspec.core.url_to_fs(text, **options)
    if isinstance(fs, LocalFileSystem):
        return Location(str(Path(path).resolve()), options)
    close_adlfs_at_exit()
    return Location(text, options)


def _remote_stamp(url: str, info: dict) -> FileStamp:
    version = ""
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value is not None:
            version = value.isoformat() if isinstance(value, datetime) else str(value)
            break
    return FileStamp(url, int(info.get("size") or 0), version)
