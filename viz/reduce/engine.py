"""Run a recipe over a dataset on a Dask cluster; cache and publish the result atomically.

Uniform grids are reduced chunk by chunk (:mod:`.volume_tasks`: one task per
chunk of the reduced volume, per layer, per statistics record); other meshes
one task per kept time step (:func:`.worker_tasks.reduce_time_step`). Then
the .pvd series and the manifest are written. Everything goes into
``out_dir/.tmp-<key>-<random>/``, renamed to ``out_dir/<key>`` at the end, so
``out_dir/<key>`` either holds a complete result or does not exist (a
worker lost mid-run makes Dask rerun its tasks; chunk writes are idempotent).
The key hashes the input files' identity (url, size, mtime), the recipe and
:data:`ENGINE_VERSION`: a second run with the same inputs returns the stored
result without doing any work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dask

from ..datasets import Dataset, DatasetSummary, FieldSummary, open_dataset
from ..errors import InputError
from .recipe import Recipe
from .result import MANIFEST_FORMAT, MANIFEST_NAME, ReducedDataset
from .local_cluster import reduction_cluster
from .volume_tasks import assemble, step_outputs, volume_geometry
from .worker_tasks import ReducePlan, field_ranges, layer_names, reduce_time_step, write_series

#: Part of every cache key: bump it when the output of a recipe changes.
ENGINE_VERSION = "3"

log = logging.getLogger(__name__)


def cache_key(dataset: Dataset, recipe: Recipe) -> str:
    """The 16-hex-digit name of the result directory for ``dataset`` reduced by ``recipe``.

    ``sha256(dataset.fingerprint() + recipe.canonical_json() + ENGINE_VERSION)[:16]``.
    Costs one ``stat`` per input file; reads no data.

    Example:
        >>> cache_key(open_dataset("sim/simulation.pvd"), recipe)  # doctest: +SKIP
        '3f2a9c0d1b7e4a55'
    """
    text = dataset.fingerprint() + recipe.canonical_json() + ENGINE_VERSION
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def reduce_dataset(
    source: str | os.PathLike | Dataset,
    recipe: Recipe | Mapping[str, Any] | None,
    out_dir: str | os.PathLike,
    *,
    client: Any | None = None,
    summary: DatasetSummary | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_bytes: int | None = None,
) -> ReducedDataset:
    """Reduce a dataset with a recipe into ``out_dir/<key>``, or return the cached result.

    Args:
        source: a path or fsspec URL that ``open_dataset`` reads, or an opened Dataset.
        recipe: a Recipe, the recipe as a dict (validated), or None for
            ``Recipe.default_for(dataset.summary())``.
        out_dir: where result directories live (created if missing).
        client: a ``distributed.Client`` to run on; None starts a temporary
            LocalCluster (min(2, CPUs) worker processes) and closes it after.
        summary: the dataset's summary if the caller has it; used to check the
            recipe. Without it the check reads only the first time step
            (``dataset.summary()`` would read every step).
        progress: called as ``progress(done, total)`` from this thread each
            time an output task finishes (a chunk of the reduced volume, a
            layer file, a statistics record, or a whole time step of a mesh).
        chunk_bytes: chunk size for uniform-grid inputs (default
            ``viz.datasets.volume.DEFAULT_CHUNK_BYTES``); peak memory per
            worker is a few chunks.

    Uniform grids (Zarr, NetCDF, .vti and .pvd series of .vti) are reduced
    chunk by chunk (:mod:`.volume_tasks`); other meshes one time step per task.

    Returns:
        The reduced dataset; ``cached`` is True when nothing had to be done.

    Raises:
        InputError: a bad source, a recipe that does not fit the data (before
            any work), or a time step that cannot be reduced (after removing
            all partial output).

    Example:
        >>> from distributed import Client                                  # doctest: +SKIP
        >>> with Client(n_workers=2) as client:                              # doctest: +SKIP
        ...     data = reduce_dataset("sim/simulation.pvd",
        ...                           load_recipe("first-look.yaml"), "reduced", client=client)
        >>> data.volume_files[0].name, data.cached                          # doctest: +SKIP
        ('volume_000000.vti', False)
    """
    started = time.perf_counter()
    dataset = source if isinstance(source, Dataset) else open_dataset(source)
    if recipe is None:
        summary = summary or dataset.summary()
        recipe = Recipe.default_for(summary)
    elif not isinstance(recipe, Recipe):
        recipe = Recipe.from_dict(dict(recipe))

    out_dir = Path(out_dir)
    key = cache_key(dataset, recipe)
    final = out_dir / key
    if (final / MANIFEST_NAME).is_file():
        log.info("reduce %s: cached result %s", dataset.source, final)
        return ReducedDataset.load(final, cached=True)

    if final.exists() and not (final / MANIFEST_NAME).is_file():
        raise _not_ours(final)  # (a run that finished since the check above has a manifest)
    if summary is None:
        summary = header_summary(dataset) if _chunked(dataset, recipe) else first_step_summary(dataset)
    recipe.check_against(summary)
    kept = tuple(range(0, len(dataset.time_values), recipe.stride))
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=out_dir))
    try:
        plan = ReducePlan(dataset, recipe, kept, tuple(layer_names(recipe)), str(work_dir))
        with _client_for(client) as running:
            if _chunked(dataset, recipe):
                outputs = [task for position in range(len(kept))
                           for task in step_outputs(plan, position, chunk_bytes)]
                geometry = [volume_geometry(plan, position, chunk_bytes) for position in range(len(kept))]
                records = assemble(plan, _run_outputs(outputs, running, progress), geometry)
            else:
                outputs = [dask.delayed(reduce_time_step, pure=True)(plan, position)
                           for position in range(len(kept))]
                records = _run_outputs(outputs, running, progress)
            body = write_series(plan, records)
        manifest = {
            "format": MANIFEST_FORMAT,
            "engine_version": ENGINE_VERSION,
            "key": key,
            "source": dataset.source,
            "input_format": dataset.format,
            "fingerprint": dataset.fingerprint(),
            "recipe": recipe.to_dict(),
            **body,
            "seconds": round(time.perf_counter() - started, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (work_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        work_dir.chmod(0o755)  # mkdtemp made it private; the result is for viz servers to read
        lost_race = _publish(work_dir, final)
    except BaseException:
        remove_tree(work_dir)
        raise
    log.info("reduce %s: wrote %s in %.1f s", dataset.source, final, manifest["seconds"])
    return ReducedDataset.load(final, cached=lost_race)


def build_graph(plan: ReducePlan) -> Any:
    """The reduction as a ``dask.delayed`` graph: one task per kept time step, then the series.

    Computable by any Dask scheduler (``dask.compute(graph)`` runs it in threads).

    Example:
        >>> graph = build_graph(plan)           # doctest: +SKIP
        >>> len(graph.dask)                      # the plan, 1 task per step, the series  # doctest: +SKIP
        8
    """
    token = uuid.uuid4().hex[:12]
    shared = dask.delayed(plan, name=f"hpcviz-reduce-plan-{token}", traverse=False)
    steps = [
        dask.delayed(reduce_time_step, pure=True)(
            shared, position, dask_key_name=f"hpcviz-reduce-step-{position}-{token}"
        )
        for position in range(len(plan.steps))
    ]
    return dask.delayed(write_series, pure=True)(
        shared, steps, dask_key_name=f"hpcviz-reduce-series-{token}"
    )


def _chunked(dataset: Dataset, recipe: Recipe) -> bool:
    """Whether the chunk-by-chunk path applies: a uniform grid and only point fields wanted."""
    if not dataset.is_volume:
        return False
    points, cells = dataset._field_names()
    wanted = set(recipe.fields) if recipe.fields else set(points) | set(cells)
    return bool(points) and not (wanted & (set(cells) - set(points)))


def _run_outputs(outputs: list[Any], client: Any, progress: Callable[[int, int], None] | None) -> list[Any]:
    """Compute ``outputs`` on ``client``, calling ``progress(done, total)`` as each one finishes."""
    from distributed import as_completed

    futures = client.compute(outputs, optimize_graph=False)
    total = len(futures)
    if progress is not None:
        progress(0, total)
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            if future.status == "error":
                future.result()  # raises the task's own error
            if progress is not None:
                progress(done, total)
        return client.gather(futures)
    except BaseException:
        # Stop what has not started; what is running finds its directory gone.
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise


@contextlib.contextmanager
def _client_for(client: Any | None) -> Iterator[Any]:
    """``client`` itself, or a temporary process-based LocalCluster's client."""
    if client is not None:
        yield client
        return
    from distributed import Client

    workers = max(1, min(2, os.cpu_count() or 1))
    with reduction_cluster(workers) as cluster, Client(cluster) as temporary:
        yield temporary


def _publish(work_dir: Path, final: Path) -> bool:
    """Rename ``work_dir`` to ``final``; True when another run got there first.

    The loser of a race discards its own copy and uses the winner's.
    """
    try:
        os.rename(work_dir, final)
        return False
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if (final / MANIFEST_NAME).is_file():
        remove_tree(work_dir)
        return True
    raise _not_ours(final)


def _not_ours(final: Path) -> InputError:
    return InputError(
        str(final), "exists but is not a reduced dataset (no manifest.json)",
        "move it away or delete it, then run again",
    )


def remove_tree(path: Path, attempts: int = 50) -> None:
    """Remove a directory even while a late task is still writing a file into it."""
    for attempt in range(attempts):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def first_step_summary(dataset: Dataset) -> DatasetSummary:
    """A summary from the first time step alone: enough to check a recipe.

    Field ranges are those of step 0; bounds, kind and dimensions too.
    """
    mesh = dataset.read(0)
    kind = mesh.GetClassName().removeprefix("vtk")
    dims = tuple(int(d) for d in mesh.dimensions) if hasattr(mesh, "dimensions") else None
    fields = [
        FieldSummary(name, info["association"], info["components"], info["dtype"], tuple(info["range"]))
        for name, info in field_ranges(mesh).items()
    ]
    return DatasetSummary(
        source=dataset.source, format=dataset.format, kind=kind, fields=fields,
        bounds=tuple(float(b) for b in mesh.bounds), dimensions=dims,  # type: ignore[arg-type]
        n_points=int(mesh.n_points), n_cells=int(mesh.n_cells),
        time_values=list(dataset.time_values), nbytes=dataset.nbytes,
    )


def header_summary(dataset: Dataset) -> DatasetSummary:
    """What a recipe check needs of a uniform grid, from its headers alone (no data read).

    Field ranges are unknown here: (nan, nan).
    """
    return dataset.summary(ranges=False)
