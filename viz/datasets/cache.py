"""The bounded local cache for whole-file formats read from fsspec URLs.

VTK's readers (VTK XML, VTKHDF, Exodus, OpenFOAM) need a local path, so a
remote file (or an OpenFOAM case folder) is copied here once. Each copy lives
in its own entry folder named after (url, size, version) of what it holds:
a changed remote file gets a new entry, and a half-finished download (a
``.part`` file) is never mistaken for a finished one.

The cache is bounded: after every download the least recently used entries
are removed until the total size is at most ``max_bytes``
(``$HPCVIZ_CACHE_MAX_BYTES``, default 10 GiB). The entry just written is
never removed, so one file larger than the bound still opens. A cache hit
marks its entry as recently used.

Chunked formats (Zarr, NetCDF, raw volumes, VTKHDF volumes read by region)
never come here: they are read in ranges straight from fsspec.

Example:
    >>> cache = WholeFileCache("/tmp/hpcviz-cache", max_bytes=2 << 30)  # doctest: +SKIP
    >>> cache.fetch(resolve_location("az://runs/mesh.vtu"))            # doctest: +SKIP
    '/tmp/hpcviz-cache/3f9a.../mesh.vtu'
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError
from ..paths import hpcviz_home

CACHE_ENV = "HPCVIZ_CACHE_DIR"
CACHE_MAX_ENV = "HPCVIZ_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 10 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def default_cache_dir() -> Path:
    """``$HPCVIZ_CACHE_DIR``, else ``$HPCVIZ_HOME/cache/fsspec`` (``~/.hpcviz/cache/fsspec``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return hpcviz_home() / "cache" / "fsspec"


def parse_size(text: str | int) -> int:
    """Bytes from ``"512M"``, ``"10GiB"``, ``"2g"`` or a plain number.

    Example:
        >>> parse_size("1.5G"), parse_size("512MiB"), parse_size(4096)
        (1610612736, 536870912, 4096)
    """
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
    if not match:
        raise InputError(str(text), "is not a size", "write it as bytes or with a unit, e.g. 512M or 10G")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def default_max_bytes() -> int:
    """``$HPCVIZ_CACHE_MAX_BYTES`` (e.g. ``20G``), else 10 GiB."""
    env = os.environ.get(CACHE_MAX_ENV)
    return parse_size(env) if env else DEFAULT_MAX_BYTES


class WholeFileCache:
    """A folder of downloaded files, least recently used evicted beyond ``max_bytes``."""

    def __init__(self, root: str | os.PathLike | None = None, max_bytes: int | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)

    def entry(self, identity: Sequence[str]) -> Path:
        """The entry folder for what ``identity`` (url, size, version, ...) names."""
        key = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:24]
        return self.root / key

    def fetch_file(self, identity: Sequence[str], name: str, size: int,
                   download: Callable[[str], None]) -> str:
        """The cached copy of one file, downloaded with ``download(tmp_path)`` when absent."""
        entry = self.entry(identity)
        target = entry / name
        if target.is_file() and target.stat().st_size == size:
            _touch(entry)
            return str(target)
        entry.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry, prefix=f".{name}.", suffix=".part")
        os.close(fd)
        try:
            download(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _touch(entry)
        self.evict(keep=entry)
        return str(target)

    def fetch_tree(self, identity: Sequence[str], name: str, download: Callable[[str], None]) -> str:
        """The cached copy of a folder, downloaded into an empty folder by ``download``."""
        entry = self.entry(identity)
        target = entry / name
        if target.is_dir():
            _touch(entry)
            return str(target)
        entry.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=entry, prefix=f".{name}.", suffix=".part")
        try:
            download(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _touch(entry)
        self.evict(keep=entry)
        return str(target)

    def size(self) -> int:
        """Bytes held by all entries."""
        return sum(_tree_size(entry) for entry in self._entries())

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until at most ``max_bytes`` remain; return them."""
        entries = sorted(self._entries(), key=_last_used)
        sizes = {entry: _tree_size(entry) for entry in entries}
        total = sum(sizes.values())
        removed = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if keep is not None and entry == keep:
                continue
            shutil.rmtree(entry, ignore_errors=True)  # open files stay readable until closed
            total -= sizes[entry]
            removed.append(entry)
        return removed

    def _entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir()]


def _touch(entry: Path) -> None:
    try:
        os.utime(entry)
    except FileNotFoundError:  # evicted by another process meanwhile: harmless
        pass


def _last_used(entry: Path) -> float:
    try:
        return entry.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total
