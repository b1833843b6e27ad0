"""Run a recipe over a dataset as a Dask graph; cache and publish the result atomically.

The graph has one task per kept time step (read -> volume steps -> geometry
layers -> write this step's files) and one final task that writes the .pvd
series. Everything is written into ``out_dir/.tmp-<key>-<random>/`` and
renamed to ``out_dir/<key>`` at the end, so ``out_dir/<key>`` either holds a
complete result or does not exist. The key hashes the input files' identity
(url, size, mtime), the recipe and :data:`ENGINE_VERSION`: a second run with
the same inputs returns the stored result without doing any work.
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
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dask

from ..datasets import Dataset, DatasetSummary, FieldSummary, open_dataset
from ..errors import InputError
from .recipe import Recipe
from .result import MANIFEST_FORMAT, MANIFEST_NAME, ReducedDataset
from .worker_tasks import ReducePlan, field_ranges, layer_names, reduce_time_step, write_series

#: Part of every cache key: bump it when the output of a recipe changes.
ENGINE_VERSION = "1"

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
    recipe.check_against(summary or first_step_summary(dataset))
    kept = tuple(range(0, len(dataset.time_values), recipe.stride))
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=out_dir))
    try:
        plan = ReducePlan(dataset, recipe, kept, tuple(layer_names(recipe)), str(work_dir))
        with _client_for(client) as running:
            body = _run(build_graph(plan), running)
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


def _run(graph: Any, client: Any) -> dict[str, Any]:
    future = client.compute(graph)
    try:
        return future.result()
    except BaseException:
        # Stop what has not started; what is running finds its directory gone.
        with contextlib.suppress(Exception):
            future.cancel()
        raise


@contextlib.contextmanager
def _client_for(client: Any | None) -> Iterator[Any]:
    """``client`` itself, or a temporary process-based LocalCluster's client."""
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    workers = max(1, min(2, os.cpu_count() or 1))
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as temporary:
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
