"""A LocalCluster tuned for reductions: one thread per worker process, optionally big allocations reused.

A chunk read allocates tens of MB at a time. glibc serves those with fresh
``mmap`` pages and returns them at once, so every chunk pays its page faults
again (measured: half the worker's CPU time in the kernel for a Zarr read
plus coarsen). ``reuse_heap=True`` raises ``MALLOC_MMAP_THRESHOLD_`` so they
stay in the heap (about 2x less kernel time on the light recipe), at a cost
in memory: a worker's heap then keeps what its biggest tasks freed (measured
2-3.7 GB per worker for a 1024^3 isosurface). Off by default: peak memory
bounded by chunks matters more than kernel time. ``HPCVIZ_REUSE_HEAP=1``
in the environment turns it on for clusters started without the argument.

Example:
    >>> with reduction_cluster(2) as cluster:   # doctest: +SKIP
    ...     client = Client(cluster)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import dask

#: Environment of every worker process (dask's ``distributed.nanny.pre-spawn-environ``).
WORKER_ENVIRON = {"OMP_NUM_THREADS": "1"}

#: Added to :data:`WORKER_ENVIRON` with ``reuse_heap``: allocations under 256 MB stay in the heap.
REUSE_HEAP_ENVIRON = {
    "MALLOC_MMAP_THRESHOLD_": str(256 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20),
}


@contextlib.contextmanager
def reduction_cluster(n_workers: int, *, reuse_heap: bool | None = None) -> Iterator[object]:
    """A process-based ``distributed.LocalCluster`` of ``n_workers`` single-threaded workers.

    ``reuse_heap`` None reads ``HPCVIZ_REUSE_HEAP`` (``1`` = on; default off).
    """
    from distributed import LocalCluster

    if reuse_heap is None:
        reuse_heap = os.environ.get("HPCVIZ_REUSE_HEAP", "0") == "1"
    environ = {**WORKER_ENVIRON, **(REUSE_HEAP_ENVIRON if reuse_heap else {})}
    settings = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}
    with dask.config.set(settings), LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


__all__ = ["REUSE_HEAP_ENVIRON", "WORKER_ENVIRON", "reduction_cluster"]
