"""`hpcviz reduce SOURCE --recipe FILE --out DIR [--workers N]`: the reduction alone.

No Prefect, no viewer: for sbatch scripts and notebooks. Shows a progress bar
(rich) while it runs and prints a summary: bytes in and out, time, peak
memory of every worker process.

Example:
    $ hpcviz reduce run/ocean.zarr --recipe light.yaml --out reduced --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any


def add_parser(commands: Any) -> None:
    """Register the ``reduce`` sub-command on an argparse sub-parsers object."""
    parser = commands.add_parser(
        "reduce",
        help="run a reduction recipe on a dataset (no Prefect, no viewer); print a summary",
        description=(
            "Reduce SOURCE (a .pvd series, .vti/.vtu/.vtp/.vts, NetCDF, Zarr, as a path or fsspec URL) "
            "with a recipe on a Dask cluster and write the result under DIR/<key>. Uniform grids are "
            "processed chunk by chunk, so the data may be larger than memory. Prints bytes in and out, "
            "time and the peak memory of each worker."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="the dataset to reduce")
    parser.add_argument("--recipe", metavar="FILE", help="reduction recipe (YAML); a default that keeps the volume small when omitted")
    parser.add_argument("--out", dest="out_dir", metavar="DIR", required=True, help="where the reduced dataset goes (DIR/<key>)")
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes of the local Dask cluster (default: one per core, at most 2)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (e.g. tcp://node:8786) instead of a local cluster")
    parser.add_argument("--chunk-mb", type=float, metavar="MB", help="chunk size for uniform grids (default: 64)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (e.g. in batch logs)")
    parser.set_defaults(func=cmd_reduce)


def _peak_rss_mb() -> float:
    """Peak resident memory of the calling process, in MB (runs on each worker)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    from distributed import Client

    from prefect_hpcviz.viz.errors import InputError
    from prefect_hpcviz.viz.reduce.local_cluster import reduction_cluster

    if scheduler:
        try:
            with Client(scheduler, timeout="20s") as client:
                yield client
        except OSError as error:
            raise InputError(scheduler, f"no Dask scheduler answers there ({error})",
                             "check the address, or leave --scheduler out for a local cluster") from None
        return
    if workers is not None and workers < 1:
        raise InputError("--workers", f"must be 1 or more; got {workers}", "pass e.g. --workers 2")
    n = workers or max(1, min(2, os.cpu_count() or 1))
    with reduction_cluster(n) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    """A ``progress(done, total)`` callback drawing a rich bar (a no-op when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("reducing"), BarColumn(), MofNCompleteColumn(), TextColumn("outputs"),
                  TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task("reduce", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def cmd_reduce(args: argparse.Namespace) -> int:
    from prefect_hpcviz.viz.datasets import open_dataset
    from prefect_hpcviz.viz.reduce import load_recipe, reduce_dataset

    # Headers only: reduce_dataset checks the recipe against them before any work.
    recipe = load_recipe(args.recipe) if args.recipe else None
    dataset = open_dataset(args.source)
    chunk_bytes = int(args.chunk_mb * 2**20) if args.chunk_mb else None
    started = time.perf_counter()
    with _client(args.workers, args.scheduler) as client, _progress_bar(args.progress) as progress:
        data = reduce_dataset(dataset, recipe, args.out_dir, client=client, progress=progress,
                              chunk_bytes=chunk_bytes)
        peaks = client.run(_peak_rss_mb)
    seconds = time.perf_counter() - started
    print(f"{'reused' if data.cached else 'reduced'} {dataset.source}")
    print(f"  out:    {data.path}")
    print(f"  bytes:  {_size(data.bytes_in)} in, {_size(data.bytes_out)} out")
    if data.cached:
        print(f"  time:   {seconds:.1f} s (an earlier result with the same inputs and recipe, no work done)")
    else:
        print(f"  time:   {data.seconds:.1f} s reducing, {seconds:.1f} s with the cluster's start and stop")
    print(f"  layers: {', '.join(layer.name for layer in data.layers) or 'none'}; "
          f"{len(data.time_values)} time step{'s' if len(data.time_values) != 1 else ''}")
    memory = ", ".join(f"{_size(mb * 1e6)}" for mb in peaks.values())
    print(f"  peak memory per worker: {memory}")
    return 0
