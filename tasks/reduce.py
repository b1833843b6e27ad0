"""Task: reduce a dataset with a recipe on a Dask cluster."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from prefect_hpcviz.blocks.azure import AzureBatchDaskCluster
from prefect_hpcviz.blocks.blob_credentials import BlobCredentials, blob_storage_options
from prefect_hpcviz.blocks.clusters import LocalDaskCluster, SlurmDaskCluster
from prefect_hpcviz.tasks.progress import ReductionProgress
from prefect_hpcviz.tasks.retry import unless_bad_input
from prefect_hpcviz.viz import reduce as engine
from prefect_hpcviz.viz.datasets import DatasetSummary, open_dataset
from prefect_hpcviz.viz.paths import hpcviz_home
from prefect_hpcviz.viz.reduce.remote_copy import copy_reduced


def resolve_recipe(recipe: Any, summary: DatasetSummary) -> engine.Recipe:
    """A Recipe from a Recipe, a YAML file path, a YAML string, a dict or None (default)."""
    if recipe is None:
        return engine.Recipe.default_for(summary)
    if isinstance(recipe, engine.Recipe):
        return recipe
    if isinstance(recipe, dict):
        return engine.Recipe.from_dict(recipe)
    text = str(recipe)
    if "\n" not in text and (Path(text).suffix in {".yaml", ".yml"} or Path(text).exists()):
        return engine.load_recipe(text)
    return engine.Recipe.from_yaml(text)


@task(name="reduce-dataset", retries=1, retry_delay_seconds=5, retry_condition_fn=unless_bad_input)
def reduce_dataset(
    source: str,
    recipe: Any = None,
    *,
    summary: DatasetSummary | None = None,
    out_dir: str | None = None,
    cluster: LocalDaskCluster | SlurmDaskCluster | AzureBatchDaskCluster | None = None,
    copy_to: str | None = None,
    copy_storage_options: dict[str, Any] | None = None,
    storage_credentials: BlobCredentials | None = None,
) -> engine.ReducedDataset:
    """Run a reduction recipe over ``source`` as a Dask graph.

    The result is cached on disk by (inputs, recipe): a second run with the
    same inputs returns at once. A retry after a lost worker picks up where
    the atomic output left off. A progress artifact follows the reduction
    while it runs (one step per output chunk, layer or statistics record).

    Args:
        source: a dataset path or fsspec URL.
        recipe: a Recipe, a YAML file, YAML text, a dict, or None for a
            default that keeps the volume small and adds a contour and a slice.
        summary: the dataset's summary, if already known (saves a read).
        out_dir: where reduced data goes; ``$HPCVIZ_HOME/reduced`` by default.
        cluster: where the graph runs; a LocalDaskCluster by default.
        copy_to: an fsspec URL (``az://container/prefix``) to copy the result
            to, as ``<copy_to>/<cache key>/`` with manifest.json written last;
            a complete copy already there is not uploaded again. Its URL is
            the result's ``remote_url``.
        copy_storage_options: fsspec options for ``copy_to`` (endpoint,
            account name); ``storage_credentials``' when empty, else the environment's.
        storage_credentials: for ``az://`` URLs, prefect-azure's
            AzureBlobStorageCredentials block or the name of a saved one: it
            reads ``source`` and writes ``copy_to``. Only the block (its
            secrets masked) or its name is in the run's parameters; the keys
            are read here, in the task, and never logged.

    Example:
        >>> reduced = reduce_dataset("run/output.pvd", "recipes/light.yaml",
        ...                          cluster=LocalDaskCluster(n_workers=2))
    """
    logger = get_run_logger()
    options = blob_storage_options(storage_credentials)
    dataset = open_dataset(source, storage_options=options)
    if recipe is None and summary is None:
        summary = dataset.summary()  # the default recipe needs field ranges (reads every step)
    resolved = resolve_recipe(recipe, summary)
    out = Path(out_dir) if out_dir else hpcviz_home() / "reduced"
    progress = ReductionProgress(source)
    with (cluster or LocalDaskCluster()).get_client() as client:
        logger.info("reducing %s on %s", source, client.scheduler_info().get("address", "dask"))
        reduced = engine.reduce_dataset(dataset, resolved, out, client=client, summary=summary,
                                        progress=progress)
    logger.info(
        "%s %.1f MB to %.1f MB in %.1f s -> %s",
        "reused the earlier reduction of" if reduced.cached else "reduced",
        reduced.bytes_in / 1e6,
        reduced.bytes_out / 1e6,
        reduced.seconds,
        reduced.path,
    )
    if copy_to:
        reduced = replace(reduced, remote_url=copy_reduced(reduced, copy_to, copy_storage_options or options))
        logger.info("copied the reduced data to %s", reduced.remote_url)
    return reduced
