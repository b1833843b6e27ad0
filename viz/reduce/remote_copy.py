"""Copy a reduced dataset to object storage (Azure Blob, S3, any fsspec URL).

``copy_reduced(result, "az://runs/reduced")`` uploads ``result.path`` to
``az://runs/reduced/<cache key>/``: every file first, ``manifest.json``
last. Blob storage has no atomic folder rename (each blob is written
atomically, a "folder" is only a name prefix), so the manifest is the commit
mark: a reader that finds ``<key>/manifest.json`` knows every file it lists
is there; a prefix without it is an interrupted copy, and the next
``copy_reduced`` of the same result uploads it again (overwriting what is
there) and writes the manifest at the end. A copy whose manifest is present
with the same cache key is complete and is left alone.

Example:
    >>> from prefect_hpcviz.viz.reduce import ReducedDataset                   # doctest: +SKIP
    >>> reduced = ReducedDataset.load("reduced/3f2a9c0d1b7e4a55")              # doctest: +SKIP
    >>> copy_reduced(reduced, "az://runs/reduced",
    ...              storage_options={"account_name": "mydata"})               # doctest: +SKIP
    'az://runs/reduced/3f2a9c0d1b7e4a55/'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from .result import MANIFEST_NAME, ReducedDataset

_STORE_FIX = ("check the URL (az://CONTAINER/PREFIX; the container must exist) and the credentials in "
              "storage_options or the environment (AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME "
              "and AZURE_STORAGE_ACCOUNT_KEY)")


def copy_reduced(result: ReducedDataset, url: str, storage_options: dict[str, Any] | None = None) -> str:
    """Upload a reduced directory to ``url/<cache key>/``, manifest last; skip a complete copy.

    Args:
        result: the reduced dataset (its ``path`` is the local directory).
        url: an fsspec URL of the folder that holds copies, e.g.
            ``az://container/prefix`` (adlfs).
        storage_options: fsspec options (credentials, endpoint), e.g.
            ``{"connection_string": ...}`` or ``{"account_name": ...}``.

    Returns:
        The URL of the copy, ``url/<key>/``.

    Raises:
        InputError: the URL is not one fsspec can write to, or the storage
            refused (container missing, wrong credentials).

    Example:
        >>> copy_reduced(reduced, "az://runs/reduced", {"connection_string": conn})  # doctest: +SKIP
        'az://runs/reduced/3f2a9c0d1b7e4a55/'
    """
    import fsspec

    if not isinstance(url, str) or "://" not in url:
        raise InputError(str(url), "not a storage URL", "pass a URL such as az://CONTAINER/PREFIX")
    target = f"{url.rstrip('/')}/{result.key}/"
    try:
        fs, root = fsspec.core.url_to_fs(target, **dict(storage_options or {}))
    except (ImportError, ValueError, TypeError) as error:
        raise InputError(url, f"cannot open it ({error})",
                         "use a protocol fsspec knows (az:// needs adlfs: pip install 'prefect-hpcviz[azure]') "
                         "and valid storage_options") from None
    root = root.rstrip("/")
    try:
        if _holds_complete_copy(fs, root, result.key):
            return target
        local = sorted(p for p in Path(result.path).rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
        for path in local:
            fs.put_file(str(path), f"{root}/{path.relative_to(result.path).as_posix()}")
        fs.put_file(str(Path(result.path) / MANIFEST_NAME), f"{root}/{MANIFEST_NAME}")
    except Exception as error:  # adlfs/azure-core raise many types; all mean "the store said no"
        reason = (str(error).splitlines() or [""])[0]
        raise InputError(url, f"cannot write the reduced dataset there ({type(error).__name__}: {reason})",
                         _STORE_FIX) from None
    finally:
        fs.invalidate_cache(root)
    return target


def _holds_complete_copy(fs: Any, root: str, key: str) -> bool:
    """True when ``root/manifest.json`` exists and names cache key ``key``."""
    try:
        manifest = json.loads(fs.cat_file(f"{root}/{MANIFEST_NAME}"))
    except (FileNotFoundError, ValueError):  # none yet, or not JSON: copy (again)
        return False
    return isinstance(manifest, dict) and str(manifest.get("key", Path(root).name)) == key


__all__ = ["copy_reduced"]
