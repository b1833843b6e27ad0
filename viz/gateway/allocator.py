"""Keep glibc's allocator from handing large proxy buffers back to the kernel after each use.

A proxied 1 MiB body passes through bytes objects of up to 256 KiB (one per
socket read, in aiohttp's request parser and in uvloop). glibc serves blocks
that large with ``mmap`` and returns them with ``munmap``, or trims the heap
top as soon as they are freed; every new block then costs page faults and
zeroed pages (measured: about a fifth of the gateway's CPU time on 1 MiB
POSTs). With a fixed mmap threshold of 4 MiB and a trim threshold of 16 MiB
the same memory is reused from read to read; at most 16 MiB of freed heap is
kept (RSS does not fall back below that after a burst).

Example:
    >>> keep_freed_memory()  # once, at gateway start (a no-op where libc is not glibc)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024  # blocks up to this size come from the heap
TRIM_THRESHOLD = 16 * 1024 * 1024  # free heap kept at its top before it goes back to the kernel


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for the proxy; False where that is not possible."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
