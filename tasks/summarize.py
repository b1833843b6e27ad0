"""Task: what is in a dataset."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from prefect_hpcviz.blocks.blob_credentials import BlobCredentials, blob_storage_options
from prefect_hpcviz.tasks.retry import unless_bad_input
from prefect_hpcviz.viz.datasets import DatasetSummary, summarize


@task(name="summarize-dataset", retries=2, retry_delay_seconds=2, retry_condition_fn=unless_bad_input)
def summarize_dataset(
    source: str,
    storage_options: dict[str, Any] | None = None,
    storage_credentials: BlobCredentials | None = None,
    ranges: bool = True,
) -> DatasetSummary:
    """Format, fields with ranges, bounds, time steps and bytes of ``source``.

    Args:
        source: a dataset path or fsspec URL.
        storage_options: fsspec options for a remote ``source``.
        storage_credentials: for ``az://`` sources, prefect-azure's
            AzureBlobStorageCredentials block or the name of a saved one
            (used when ``storage_options`` is empty; the environment's when both are).
        ranges: read the data for the fields' ranges (every time step once,
            chunk by chunk for uniform grids). False reads only the headers of
            a uniform grid: its ranges are then unknown (nan).

    Example:
        >>> summary = summarize_dataset("run/output.pvd")
        >>> [f.name for f in summary.fields]
        ['pressure', 'velocity']
    """
    summary = summarize(source, ranges=ranges,
                        storage_options=storage_options or blob_storage_options(storage_credentials))
    get_run_logger().info(
        "%s: %s %s, %d time steps, fields %s, %.1f MB",
        source,
        summary.format,
        summary.kind,
        len(summary.time_values),
        ", ".join(f.name for f in summary.fields),
        summary.nbytes / 1e6,
    )
    return summary
