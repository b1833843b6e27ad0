"""Raw binary volumes described by a small sidecar header (``volume.raw`` + ``volume.raw.json``).

Many simulation codes dump arrays with a plain ``fwrite``. A few lines of
JSON (or YAML: ``volume.raw.yaml``) next to the file say how to read it::

    {
      "dimensions": [256, 256, 128],     # points along x, y, z (x varies fastest)
      "dtype": "float32",                # any NumPy dtype name
      "byte_order": "little",            # or "big"; default little
      "spacing": [0.1, 0.1, 0.2],        # default [1, 1, 1]
      "origin": [0, 0, 0],               # default [0, 0, 0]
      "fields": ["pressure", {"name": "velocity", "components": 3}],
      "times": [0.0, 0.5, 1.0],          # default: one step at t = 0
      "offset": 0                        # bytes to skip at the start (a Fortran record marker, ...)
    }

The file holds, for each time step in order, each field in order, one array
in C order ``[z][y][x](component)``. ``"file"`` in the header names the data
file when it is not the header's name minus ``.json``.

Nothing is loaded at open. A time step read maps the file (locally) or fetches
only that step's byte ranges (fsspec URLs); :meth:`RawVolumeDataset.volume`
reads z-slabs on demand, so a region costs only its own bytes.

Example:
    >>> import numpy as np, json
    >>> np.zeros((8, 8, 8), "float32").tofile("/tmp/v.raw")
    >>> _ = open("/tmp/v.raw.json", "w").write(json.dumps({"dimensions": [8, 8, 8], "dtype": "float32",
    ...                                                     "fields": ["rho"]}))
    >>> from prefect_hpcviz.viz.datasets import open_dataset
    >>> open_dataset("/tmp/v.raw").read(0).dimensions
    (8, 8, 8)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyvista
import yaml

from ..errors import InputError
from .base import Dataset
from .location import FileStamp, Location
from .volume import ChunkedVolume, RawVolumeFile, from_raw

HEADER_SUFFIXES = (".json", ".yaml", ".yml")
_HEADER_FIX = "fix the header (see the Formats section of the README)"


@dataclass(frozen=True)
class RawField:
    """One field of a raw volume: its name and number of components."""

    name: str
    components: int = 1


@dataclass(frozen=True)
class RawHeader:
    """The parsed sidecar header of a raw volume.

    Example:
        >>> h = RawHeader.parse({"dimensions": [4, 3, 2], "dtype": "float32", "fields": ["p"]}, "h.json")
        >>> h.step_bytes, h.shape(h.fields[0])
        (96, (2, 3, 4))
    """

    dimensions: tuple[int, int, int]
    dtype: np.dtype
    fields: tuple[RawField, ...]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    times: tuple[float, ...] = (0.0,)
    offset: int = 0
    file: str | None = None

    @classmethod
    def parse(cls, data: Any, source: str) -> RawHeader:
        """Validate a header mapping; InputError naming ``source`` and the key at fault."""
        if not isinstance(data, dict):
            raise InputError(source, "is not a raw-volume header (expected a mapping of keys)", _HEADER_FIX)
        known = {"dimensions", "dtype", "byte_order", "spacing", "origin", "fields", "times", "offset", "file"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(source, f"unknown header key(s) {', '.join(unknown)} (allowed: "
                             f"{', '.join(sorted(known))})", _HEADER_FIX)
        for key in ("dimensions", "dtype", "fields"):
            if key not in data:
                raise InputError(source, f"the header has no {key!r}", _HEADER_FIX)
        dims = _numbers(data["dimensions"], 3, int, "dimensions", source)
        if min(dims) < 1:
            raise InputError(source, f"'dimensions' must be positive, got {list(dims)}", _HEADER_FIX)
        order = str(data.get("byte_order", "little")).lower()
        if order not in ("little", "big"):
            raise InputError(source, f"'byte_order' must be 'little' or 'big', got {order!r}", _HEADER_FIX)
        try:
            dtype = np.dtype(str(data["dtype"]))
        except TypeError:
            raise InputError(source, f"'dtype' {data['dtype']!r} is not a NumPy dtype name",
                             "use e.g. float32, float64, int16, uint8") from None
        if dtype.kind not in "fiub" or dtype.itemsize == 0:
            raise InputError(source, f"'dtype' {dtype.name} is not a numeric type", "use e.g. float32")
        dtype = dtype.newbyteorder("<" if order == "little" else ">")
        fields = tuple(_field(f, source) for f in (data["fields"] or []))
        if not fields or len({f.name for f in fields}) != len(fields):
            raise InputError(source, "'fields' must list at least one field, each name once", _HEADER_FIX)
        times = tuple(float(t) for t in data.get("times", [0.0]) or [0.0])
        offset = data.get("offset", 0)
        if not isinstance(offset, int) or offset < 0:
            raise InputError(source, f"'offset' must be a byte count >= 0, got {offset!r}", _HEADER_FIX)
        return cls(
            dimensions=dims,  # type: ignore[arg-type]
            dtype=dtype,
            fields=fields,
            spacing=_numbers(data.get("spacing", [1, 1, 1]), 3, float, "spacing", source),  # type: ignore[arg-type]
            origin=_numbers(data.get("origin", [0, 0, 0]), 3, float, "origin", source),  # type: ignore[arg-type]
            times=times,
            offset=offset,
            file=str(data["file"]) if data.get("file") else None,
        )

    def shape(self, field: RawField) -> tuple[int, ...]:
        """The C-order array shape of ``field``: (z, y, x) or (z, y, x, components)."""
        nx, ny, nz = self.dimensions
        return (nz, ny, nx) + ((field.components,) if field.components > 1 else ())

    def field_bytes(self, field: RawField) -> int:
        return math.prod(self.shape(field)) * self.dtype.itemsize

    @property
    def step_bytes(self) -> int:
        """Bytes of one time step (all fields)."""
        return sum(self.field_bytes(f) for f in self.fields)

    @property
    def total_bytes(self) -> int:
        """Bytes the data file must hold: offset + every step."""
        return self.offset + self.step_bytes * len(self.times)

    def field_offset(self, step: int, name: str) -> int:
        """The byte offset in the data file where ``name`` at ``step`` starts."""
        position = self.offset + step * self.step_bytes
        for field in self.fields:
            if field.name == name:
                return position
            position += self.field_bytes(field)
        raise KeyError(name)


def _field(entry: Any, source: str) -> RawField:
    if isinstance(entry, str):
        return RawField(entry)
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        components = entry.get("components", 1)
        if isinstance(components, int) and components >= 1:
            return RawField(entry["name"], components)
    raise InputError(source, f"bad entry in 'fields': {entry!r} (a name, or {{name: ..., components: N}})",
                     _HEADER_FIX)


def _numbers(value: Any, count: int, kind: type, key: str, source: str) -> tuple:
    try:
        numbers = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count:
        raise InputError(source, f"{key!r} must be {count} numbers (x, y, z), got {value!r}", _HEADER_FIX)
    return numbers


def find_header(location: Location) -> tuple[Location, Location]:
    """(header, data file) for a ``.raw`` file or its header; InputError when the header is missing."""
    name = location.name.lower()
    if name.endswith(HEADER_SUFFIXES):
        return location, location.sibling(location.name.rsplit(".", 1)[0])
    for suffix in HEADER_SUFFIXES:
        header = location.sibling(location.name + suffix)
        if header.exists():
            return header, location
    raise InputError(location.url, f"is a raw volume without a header (looked for {location.name}.json, "
                     ".yaml and .yml next to it)",
                     'write one, e.g. {"dimensions": [nx, ny, nz], "dtype": "float32", "fields": ["name"]}')


class RangeVolumeFile(RawVolumeFile):
    """Like :class:`RawVolumeFile` for a file behind an fsspec URL: each ``[...]`` fetches z-slabs.

    Only the byte range of the requested z planes is transferred; the y/x
    selection is cut from it locally. Picklable (holds the Location).
    """

    def __init__(self, location: Location, offset: int, shape: tuple[int, ...], dtype: Any) -> None:
        super().__init__(location.url, offset, shape, dtype)
        self.location = location

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if index and index[0] is Ellipsis:
            index = (slice(None),) * (self.ndim - len(index) + 1) + index[1:]
        z = index[0] if index else slice(None)
        squeeze = not isinstance(z, slice)
        if squeeze:
            z = slice(int(z), int(z) + 1)
        start, stop, step = z.indices(self.shape[0])
        plane = math.prod(self.shape[1:]) * self.dtype.itemsize
        if stop <= start:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype.newbyteorder("="))
        begin = self.offset + start * plane
        blob = self.location.fs.cat_file(self.location.fs_path, start=begin, end=self.offset + stop * plane)
        if len(blob) != (stop - start) * plane:
            raise InputError(self.location.url, f"ends before z plane {stop} ({len(blob)} of "
                             f"{(stop - start) * plane} bytes read)", "check that the file was copied completely")
        slab = np.frombuffer(blob, dtype=self.dtype).reshape((stop - start,) + self.shape[1:])
        out = slab[(slice(None, None, step),) + tuple(index[1:]) if index else ...]
        if squeeze:
            out = out[0]
        return np.array(out, dtype=self.dtype.newbyteorder("="))


class RawVolumeDataset(Dataset):
    """A raw binary volume with a sidecar header (see the module docstring).

    Example:
        >>> ds = open_dataset("out/density.raw")   # doctest: +SKIP
        >>> ds.volume(0, "rho").data.chunksize      # doctest: +SKIP
        (64, 512, 512)
    """

    format = "raw"
    is_volume = True

    def __init__(self, location: Location) -> None:
        header_location, data_location = find_header(location)
        self.header_location = header_location.require(referenced_by=location.url)
        header = self._load_header(header_location)
        if header.file:
            data_location = header_location.sibling(header.file)
        self.header = header
        data_location.require(referenced_by=header_location.url)
        size = data_location.stamp().size
        if size < header.total_bytes:
            raise InputError(data_location.url, f"truncated: the header {header_location.name} describes "
                             f"{header.total_bytes} bytes ({len(header.times)} step(s) x {header.step_bytes} "
                             f"bytes + offset {header.offset}), the file has {size}",
                             "copy the file again, or fix 'dimensions', 'dtype', 'fields' or 'times'")
        super().__init__(data_location, header.times)

    @staticmethod
    def _load_header(location: Location) -> RawHeader:
        with location.open() as f:
            text = f.read()
        try:
            if location.name.lower().endswith(".json"):
                data = json.loads(text)
            else:
                data = yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise InputError(location.url, f"is not valid {'JSON' if location.suffix == '.json' else 'YAML'} "
                             f"({str(exc).splitlines()[0]})", _HEADER_FIX) from None
        return RawHeader.parse(data, location.url)

    def stamps(self) -> list[FileStamp]:
        return [self.header_location.stamp(), self.location.stamp()]

    def _field_names(self) -> tuple[list[str], list[str]]:
        return [f.name for f in self.header.fields], []

    def _array(self, step: int, field: RawField) -> RawVolumeFile:
        offset = self.header.field_offset(step, field.name)
        shape = self.header.shape(field)
        if self.location.is_local:
            return RawVolumeFile(self.location.url, offset, shape, self.header.dtype)
        return RangeVolumeFile(self.location, offset, shape, self.header.dtype)

    def _read(self, step: int, fields: list[str] | None) -> pyvista.DataSet:
        header = self.header
        grid = pyvista.ImageData(dimensions=header.dimensions, spacing=header.spacing, origin=header.origin)
        for field in header.fields:
            if fields is None or field.name in fields:
                values = self._array(step, field)[...]
                grid.point_data[field.name] = values.reshape(-1) if field.components == 1 else values.reshape(
                    -1, field.components)
        return grid

    def _volume(self, step: int, field: str, chunk_bytes: int | None) -> ChunkedVolume:
        entry = next(f for f in self.header.fields if f.name == field)
        nx, ny, _nz = self.header.dimensions
        return from_raw(field, self._array(step, entry), self.header.origin, self.header.spacing,
                        target_bytes=chunk_bytes, native=(1, ny, nx))
