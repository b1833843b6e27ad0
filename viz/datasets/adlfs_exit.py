"""Close Azure Blob (adlfs) file systems cleanly when the interpreter exits.

adlfs closes each file system's Blob client from a ``weakref.finalize`` that
runs ``fsspec.asyn.sync(fs.loop, close, fs)`` at exit. For a file system made
with ``asynchronous=True`` (zarr makes its own that way, on zarr's event
loop) ``fs.loop`` is None, so that finalizer raises and Python prints
"RuntimeError: Loop is not running" after the program's own output; and by
the time it would run, zarr has stopped the loop the client lives on.

:func:`close_adlfs_at_exit` registers :func:`close_adlfs_filesystems` to run
at exit before both: it closes every adlfs client on the loop it belongs to
(fsspec's for ordinary instances, zarr's for zarr's) and takes the failing
finalizers out.

Example:
    >>> fs, path = fsspec.core.url_to_fs("az://runs/ocean.zarr", **options)  # doctest: +SKIP
    >>> close_adlfs_at_exit()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import gc
import importlib
import sys
import threading
import weakref

_registered = False
_lock = threading.Lock()


def close_adlfs_at_exit() -> None:
    """Have :func:`close_adlfs_filesystems` run at exit (once per process; cheap to call again).

    Call it where ``az://`` data is opened. atexit runs handlers
    last-registered first, so this one is registered after the two it must
    run before: zarr's, which stops zarr's loop (registered when zarr is
    imported, done here first), and weakref's, which runs the finalizers
    (registered with the first finalizer of the process, made here if none was).
    A no-op at exit when no adlfs file system was made.
    """
    global _registered
    with _lock:
        if _registered:
            return
        importlib.import_module("zarr.core.sync")  # registers zarr's exit handler, if not yet done
        weakref.finalize(close_adlfs_filesystems, _nothing)  # registers weakref's, if not yet done
        atexit.register(close_adlfs_filesystems)
        _registered = True


def close_adlfs_filesystems() -> int:
    """Close the Blob clients of every live adlfs file system now; return how many closes ran.

    Example:
        >>> close_adlfs_filesystems()  # nothing made yet, nothing to close
        0
    """
    adlfs = sys.modules.get("adlfs")
    if adlfs is None:
        return 0
    zarr_sync = sys.modules.get("zarr.core.sync")
    zarr_loop = zarr_sync.loop[0] if zarr_sync is not None else None
    closed = 0
    for finalizer in [obj for obj in gc.get_objects() if isinstance(obj, weakref.finalize)]:
        info = finalizer.peek()
        if info is None or not isinstance(info[0], adlfs.AzureBlobFileSystem):
            continue
        loop, close, fs = info[2][:3]  # adlfs: finalize(fs, sync, fs.loop, close_..., fs)
        try:
            if loop is not None:  # an ordinary instance: fsspec's loop thread still runs now
                finalizer()
                closed += 1
                continue
            finalizer.detach()  # asynchronous=True: its finalizer can only fail
            if zarr_loop is not None and zarr_loop.is_running():
                zarr_sync.sync(close(fs), loop=zarr_loop, timeout=10)
                closed += 1
        except Exception:  # noqa: BLE001 - a client that cannot close at exit holds nothing worth a traceback
            continue
    return closed


def _nothing() -> None:
    return None


__all__ = ["close_adlfs_at_exit", "close_adlfs_filesystems"]
