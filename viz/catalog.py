"""The catalog of canned visualizations: which data, which recipe, which view, which thumbnails.

A catalog is a YAML file an operator keeps next to the recipes::

    defaults:                          # optional, for every entry
      app: explorer
      thumbnails: [[320, 200], [960, 600]]
    visualizations:
      - name: Vortex overview
        source: /scratch/runs/*/output.pvd   # path, fsspec URL or glob (newest match)
        recipe: recipes/overview.yaml         # a file (relative to the catalog) or inline
        view:
          camera: iso                         # or +x, -z, ..., or {position, focal_point, up}
          field: pressure
          colormap: coolwarm
          range: [0, 1]
          contours: [0.3, 0.7]
      - name: Velocity from above
        source: az://runs/latest/ocean.zarr
        storage_options: {account_name: myaccount}
        recipe: {steps: [{coarsen: {factor: 2}}]}
        view: {camera: +z, field: velocity}

Everything is checked when the catalog is read: an error names the catalog,
the entry (number and name) and the key. :func:`input_fingerprint` says
whether an entry's inputs changed: it stats the files (size, mtime or etag)
and hashes them with the recipe; no data is read.

Example:
    >>> catalog = load_catalog("catalog.yaml")               # doctest: +SKIP
    >>> [entry.slug for entry in catalog.entries]            # doctest: +SKIP
    ['vortex-overview', 'velocity-from-above']
    >>> input_fingerprint(catalog.entries[0]).key            # doctest: +SKIP
    '3f2a9c0d1b7e4a55'
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InputError
from .reduce import ENGINE_VERSION, Recipe, cache_key, load_recipe
from .view_preset import ViewPreset

DEFAULT_THUMBNAILS: tuple[tuple[int, int], ...] = ((320, 200), (640, 400))
"""Thumbnail sizes (width, height) when a catalog names none."""

_GLOB_CHARS = re.compile(r"[*?\[]")
_APP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ENTRY_KEYS = ("name", "source", "recipe", "app", "view", "thumbnails", "storage_options")


class CatalogEntry(BaseModel):
    """One canned visualization.

    Attributes:
        name: shown in the gallery; its slug names the artifact (``hpcviz-canned-<slug>``).
        source: a path, fsspec URL or glob; a glob stands for its newest match.
        recipe: the reduction recipe (None: the default recipe for the data).
        recipe_file: the file the recipe came from, if it came from one.
        app: the viz app the link opens.
        view: the view preset the app and the thumbnails open with.
        thumbnails: (width, height) of each thumbnail to render.
        storage_options: fsspec options for remote sources (credentials, endpoints).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1, description="a short name, e.g. Vortex overview")
    source: str = Field(min_length=1, description="a path, fsspec URL or glob, e.g. /runs/*/out.pvd")
    recipe: Recipe | None = None
    recipe_file: str | None = None
    app: str = Field("explorer", description="an app name, e.g. explorer")
    view: ViewPreset = ViewPreset()
    thumbnails: tuple[tuple[int, int], ...] = Field(
        DEFAULT_THUMBNAILS, min_length=1, description="a list of [width, height], e.g. [[320, 200]]"
    )
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False,  # may hold keys
                                            description="a mapping of fsspec options")

    @field_validator("app")
    @classmethod
    def _app_name(cls, app: str) -> str:
        if not _APP_NAME.match(app):
            raise ValueError(f"{app!r} is not an app name (letters, digits, . _ -)")
        return app

    @field_validator("thumbnails")
    @classmethod
    def _sizes(cls, sizes: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        for width, height in sizes:
            if not (16 <= width <= 4096 and 16 <= height <= 4096):
                raise ValueError(f"{width}x{height} is outside 16..4096 pixels")
        return sizes

    @property
    def slug(self) -> str:
        """The name in lowercase letters, digits and dashes (artifact keys, file names).

        Example:
            >>> CatalogEntry(name="Vortex: overview", source="a.pvd").slug
            'vortex-overview'
        """
        return slugify(self.name)

    @property
    def is_glob(self) -> bool:
        """True when ``source`` is a pattern."""
        return bool(_GLOB_CHARS.search(self.source))


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: where it was read from and its entries, in file order."""

    path: str
    entries: tuple[CatalogEntry, ...]

    def entry(self, name: str) -> CatalogEntry:
        """The entry called ``name`` (or with that slug); InputError listing the names."""
        for candidate in self.entries:
            if name in (candidate.name, candidate.slug):
                return candidate
        names = ", ".join(e.name for e in self.entries) or "none"
        raise InputError(self.path, f"no entry named {name!r} (entries: {names})", "use one of the entry names")


@dataclass(frozen=True)
class InputFingerprint:
    """What an entry's output depends on, and its hash.

    Attributes:
        source: the resolved source (a glob's newest match).
        key: the reduction's cache key: sha256 of every input file's (url,
            size, mtime or etag), the recipe and the engine version (16 hex digits).
        recipe: the recipe used (the default recipe made for the data when the entry has none).
        files, nbytes: how many input files and their total size.
    """

    source: str
    key: str
    recipe: Recipe
    files: int
    nbytes: int


def slugify(name: str) -> str:
    """Lowercase letters, digits and single dashes.

    Example:
        >>> slugify("Run 42: Vortex shedding")
        'run-42-vortex-shedding'
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "entry"


def load_catalog(path: str | os.PathLike) -> Catalog:
    """Read and check a catalog file.

    Raises:
        InputError: the file is missing or not YAML, or an entry is wrong (the
            message names the entry and the key).

    Example:
        >>> load_catalog("deployments/catalog.example.yaml").entries[0].name  # doctest: +SKIP
        'Vortex overview'
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(str(path), "no such file", "check the catalog's path") from None
    except OSError as error:
        raise InputError(str(path), f"cannot be read ({error.strerror})", "check its permissions") from None
    return parse_catalog(text, source=str(path), base_dir=path.parent)


def parse_catalog(text: str, *, source: str = "catalog", base_dir: str | os.PathLike = ".") -> Catalog:
    """Check a catalog given as YAML text; relative paths are taken from ``base_dir``.

    Example:
        >>> catalog = parse_catalog('''
        ... visualizations:
        ...   - {name: First look, source: /data/run1/out.pvd, view: {camera: +x}}
        ... ''')
        >>> catalog.entries[0].view.camera, catalog.entries[0].app
        ('+x', 'explorer')
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InputError(f"{source}{where}", f"not valid YAML: {getattr(error, 'problem', error)}",
                         "fix the YAML syntax at that line") from None
    if not isinstance(data, dict) or not isinstance(data.get("visualizations"), list):
        raise InputError(source, "has no list under 'visualizations'",
                         "write `visualizations:` and one `- name: ...` entry per canned visualization")
    unknown = set(data) - {"defaults", "visualizations"}
    if unknown:
        raise InputError(f"{source} key {sorted(unknown)[0]!r}", "unknown top-level key", "use only defaults and visualizations")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InputError(f"{source} key 'defaults'", "must be a mapping", "write e.g. `defaults: {app: explorer}`")
    for key in defaults:
        if key not in _ENTRY_KEYS or key in ("name", "source"):
            raise InputError(f"{source} defaults key {key!r}", "unknown key",
                             "use only " + ", ".join(k for k in _ENTRY_KEYS if k not in ("name", "source")))
    entries = [_entry(item, number, defaults, source, Path(base_dir)) for number, item in
               enumerate(data["visualizations"], start=1)]
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        if entry.slug in seen:
            raise InputError(f"{source} entry {number} ({entry.name!r}) key 'name'",
                             f"gives the same artifact key as entry {seen[entry.slug]} (hpcviz-canned-{entry.slug})",
                             "give every entry its own name")
        seen[entry.slug] = number
    return Catalog(path=source, entries=tuple(entries))


def _entry(item: Any, number: int, defaults: dict[str, Any], source: str, base_dir: Path) -> CatalogEntry:
    label = f"{source} entry {number}"
    if not isinstance(item, dict):
        raise InputError(label, f"must be a mapping with name, source, ...; got {item!r}",
                         "write `- name: ...` then `source: ...` on the next line")
    if isinstance(item.get("name"), str) and item["name"].strip():
        label += f" ({item['name']!r})"
    for key in ("name", "source"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise InputError(f"{label} key {key!r}", "missing or empty",
                             "give the entry's name" if key == "name" else "give a path, fsspec URL or glob")
    unknown = sorted(set(item) - set(_ENTRY_KEYS))
    if unknown:
        raise InputError(f"{label} key {unknown[0]!r}", "unknown key", f"use only {', '.join(_ENTRY_KEYS)}")
    merged = {**defaults, **item}
    merged["source"] = _absolute_source(merged["source"].strip(), base_dir)
    merged["view"] = ViewPreset.from_dict(merged.get("view"), source=label, key_prefix="view.")
    recipe = merged.pop("recipe", None)
    if isinstance(recipe, str):
        recipe_path = Path(recipe).expanduser()
        recipe_path = recipe_path if recipe_path.is_absolute() else base_dir / recipe_path
        if not recipe_path.is_file():
            raise InputError(f"{label} key 'recipe'", f"{recipe_path}: no such file",
                             "give a recipe file (relative to the catalog) or the recipe inline as a mapping")
        merged["recipe"], merged["recipe_file"] = load_recipe(recipe_path), str(recipe_path)
    elif isinstance(recipe, dict):
        merged["recipe"] = Recipe.from_dict(recipe, source=f"{label} key 'recipe'")
    elif recipe is not None:
        raise InputError(f"{label} key 'recipe'", f"must be a file name or a mapping; got {recipe!r}",
                         "give e.g. recipes/overview.yaml or {steps: [{coarsen: {factor: 2}}]}")
    try:
        return CatalogEntry.model_validate(merged)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        field = CatalogEntry.model_fields.get(str(first["loc"][0]))
        hint = field.description if field is not None and field.description else "a valid value"
        message = first["msg"].removeprefix("Value error, ")
        raise InputError(f"{label} key {key!r}", f"{message} (got {first.get('input')!r})", f"give {hint}") from None


def _absolute_source(source: str, base_dir: Path) -> str:
    if "://" in source or "::" in source:
        return source
    path = Path(source).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def resolve_source(entry: CatalogEntry) -> str:
    """The entry's source; for a glob, its newest match (by modification time, then name).

    Raises:
        InputError: a glob that matches nothing.

    Example:
        >>> resolve_source(CatalogEntry(name="x", source="/runs/*/out.pvd"))  # doctest: +SKIP
        '/runs/2026-11-21/out.pvd'
    """
    if not entry.is_glob:
        return entry.source
    if "://" not in entry.source:
        matches = [(os.stat(p).st_mtime_ns, p) for p in glob.glob(entry.source)]
    else:
        import fsspec

        fs, pattern = fsspec.core.url_to_fs(entry.source, **entry.storage_options)
        found = fs.glob(pattern, detail=True)
        matches = [(_modified(info), fs.unstrip_protocol(path)) for path, info in found.items()]
    if not matches:
        raise InputError(f"source {entry.source!r} of {entry.name!r}", "matches nothing",
                         "check the pattern, or wait until the first output is written")
    return max(matches)[1]


def _modified(info: dict[str, Any]) -> str:
    for key in ("last_modified", "LastModified", "mtime", "updated", "created"):
        if info.get(key) is not None:
            value = info[key]
            return value.isoformat() if hasattr(value, "isoformat") else str(value)
    return ""


def input_fingerprint(entry: CatalogEntry) -> InputFingerprint:
    """Stat an entry's input files and hash them with its recipe; reads no data.

    For an entry without a recipe, the default recipe is made from the first
    time step (one step is read).

    Raises:
        InputError: the source is missing or unreadable, or the recipe does not fit it.

    Example:
        >>> before = input_fingerprint(entry)                          # doctest: +SKIP
        >>> Path(entry.source).touch()                                 # doctest: +SKIP
        >>> input_fingerprint(entry).key != before.key                 # doctest: +SKIP
        True
    """
    from .datasets import open_dataset
    from .reduce.engine import first_step_summary

    source = resolve_source(entry)
    dataset = open_dataset(source, storage_options=entry.storage_options or None)
    recipe = entry.recipe or Recipe.default_for(first_step_summary(dataset))
    stamps = dataset.stamps()
    return InputFingerprint(
        source=dataset.source,
        key=cache_key(dataset, recipe),
        recipe=recipe,
        files=len(stamps),
        nbytes=sum(s.size for s in stamps),
    )


def fingerprint_text(fingerprint: InputFingerprint) -> str:
    """A one-line description for logs: key, files, size, engine version.

    Example:
        >>> fingerprint_text(fp)                                       # doctest: +SKIP
        '3f2a9c0d1b7e4a55 (7 files, 12.3 MB, engine 1)'
    """
    return f"{fingerprint.key} ({fingerprint.files} files, {fingerprint.nbytes / 1e6:.1f} MB, engine {ENGINE_VERSION})"


def digest(*parts: str) -> str:
    """sha256 of parts joined by NUL (used for thumbnail cache keys).

    Example:
        >>> len(digest("a", "b"))
        64
    """
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
