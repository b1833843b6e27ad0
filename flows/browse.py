"""Flow: list the datasets under a folder or container, each with a "visualize" link.

The data browser: a table artifact of every dataset (format, size, time steps,
modification time) and a markdown artifact where each dataset has a
"visualize" link. A link is registered with the gateway like any other view;
opening it starts the ``first-look`` app, which reduces the dataset with the
default recipe (once; later clicks reuse the result) and shows it in the explorer.
"""

from __future__ import annotations

import html
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from prefect_hpcviz.blocks import LocalLauncher, VizGateway
from prefect_hpcviz.blocks.blob_credentials import BlobCredentials, blob_storage_options
from prefect_hpcviz.flows.canned import resolve_gateway
from prefect_hpcviz.tasks.retry import unless_bad_input
from prefect_hpcviz.viz.browse import DatasetListing, list_datasets
from prefect_hpcviz.viz.catalog import slugify

FIRST_LOOK_APP = "first-look"


@task(name="list-datasets", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=unless_bad_input)
def list_datasets_task(
    location: str, storage_options: dict[str, Any] | None = None, storage_credentials: BlobCredentials | None = None
) -> list[DatasetListing]:
    """Every dataset under ``location`` (see ``viz/browse.py``), read with ``storage_options`` or the block's."""
    return list_datasets(location, storage_options=storage_options or blob_storage_options(storage_credentials))


@task(name="register-dataset-links", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def register_links(
    datasets: list[DatasetListing], gateway: VizGateway, launcher: LocalLauncher | None = None
) -> dict[str, str]:
    """One launch-on-click link per readable dataset: ``{url: link}``."""
    spec = (launcher or LocalLauncher()).launcher_spec()
    with gateway.get_client() as client:
        return {
            item.url: client.register(data=item.url, app=FIRST_LOOK_APP, title=item.name, launcher=spec).link
            for item in datasets
            if item.readable
        }


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes} B"


def browse_table(datasets: list[DatasetListing]) -> list[dict[str, Any]]:
    """The table artifact's rows."""
    return [
        {"dataset": d.name, "format": d.format, "size": _size(d.nbytes), "bytes": d.nbytes,
         "time steps": d.time_steps, "modified": d.modified, "url": d.url, "problem": d.error}
        for d in datasets
    ]


def browse_markdown(location: str, datasets: list[DatasetListing], links: dict[str, str]) -> str:
    """The markdown artifact: one row per dataset with its "visualize" link."""
    lines = [
        f"# Datasets in {location}\n",
        f"{len(datasets)} dataset(s). **visualize** starts a viewer on click: the data is reduced "
        "with the default recipe the first time (later clicks reuse it), then shown in the explorer.\n",
        "| dataset | format | size | time steps | modified | |",
        "|---|---|---:|---:|---|---|",
    ]
    for d in datasets:
        action = f"[visualize]({links[d.url]})" if d.url in links else f"cannot be opened: {html.escape(d.error)}"
        name = d.name.replace("|", "\\|")
        lines.append(f"| {name} | {d.format} | {_size(d.nbytes)} | {d.time_steps} | {d.modified} | {action} |")
    return "\n".join(lines) + "\n"


@flow(name="browse-datasets")
def browse_datasets(
    location: str,
    storage_options: dict[str, Any] | None = None,
    gateway: VizGateway | str | None = None,
    launcher: LocalLauncher | None = None,
    storage_credentials: BlobCredentials | None = None,
) -> list[DatasetListing]:
    """List the datasets under ``location`` as a table and as "visualize" links.

    Args:
        location: a local folder or an fsspec URL (``az://container/prefix``).
        storage_options: fsspec options for remote locations. The viz server
            that a link starts reads remote data with the environment's
            credentials (``AZURE_STORAGE_CONNECTION_STRING``, ...), never these.
        gateway: a VizGateway block, the name of a saved one, or None for the environment's.
        launcher: where the viz servers run when a link is opened.
        storage_credentials: for a container in Azure Blob, prefect-azure's
            AzureBlobStorageCredentials block or the name of a saved one (used
            when ``storage_options`` is empty; keys stay out of the run's
            parameters, unlike ``storage_options``).

    Returns:
        The datasets found, sorted by name.

    Example:
        >>> datasets = browse_datasets("az://runs", storage_options={"account_name": "myaccount"})
        >>> [(d.name, d.format, d.time_steps) for d in datasets]
        [('2026-11-21/simulation.pvd', 'pvd', 6)]
    """
    datasets = list_datasets_task(location, storage_options, storage_credentials)
    links = register_links(datasets, resolve_gateway(gateway), launcher)
    key = f"hpcviz-datasets-{slugify(location)}"[:56].rstrip("-")
    create_table_artifact(browse_table(datasets), key=key, description=f"Datasets in {location}")
    create_markdown_artifact(browse_markdown(location, datasets, links), key=f"{key}-links",
                             description=f"Visualize a dataset in {location}")
    get_run_logger().info("%d dataset(s) in %s, %d with a visualize link", len(datasets), location, len(links))
    return datasets
