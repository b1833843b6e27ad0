"""Flow: from simulation output to a clickable 3D view."""

from __future__ import annotations

from typing import Any

from prefect import flow

from prefect_hpcviz.blocks import (
    AzureBatchDaskCluster,
    AzureBatchLauncher,
    LocalDaskCluster,
    LocalLauncher,
    SlurmDaskCluster,
    SlurmLauncher,
    VizGateway,
)
from prefect_hpcviz.blocks.blob_credentials import BlobCredentials
from prefect_hpcviz.tasks import (
    Publication,
    publish_visualization,
    reduce_dataset,
    render_thumbnail,
    summarize_dataset,
)


@flow(name="visualize-simulation")
def visualize_simulation(
    source: str,
    recipe: Any = None,
    title: str | None = None,
    out_dir: str | None = None,
    cluster: LocalDaskCluster | SlurmDaskCluster | AzureBatchDaskCluster | None = None,
    launcher: LocalLauncher | SlurmLauncher | AzureBatchLauncher | None = None,
    gateway: VizGateway | None = None,
    warm: bool = False,
    copy_to: str | None = None,
    copy_storage_options: dict[str, Any] | None = None,
    storage_credentials: BlobCredentials | None = None,
) -> Publication:
    """Reduce ``source`` on Dask and publish a link to an interactive 3D view.

    Artifacts of the run: a markdown artifact whose thumbnail links to the
    view, a link artifact, and a table of fields, ranges, time steps, bytes
    before and after reduction and the reduction time. The link is logged too.

    Args:
        source: simulation output: a .pvd series, a VTK XML file, NetCDF or
            Zarr, as a path or fsspec URL.
        recipe: a reduction recipe (YAML file, YAML text, dict or Recipe);
            a default that keeps the volume small when empty.
        title: shown in the artifact and the app; the file name when empty.
        out_dir: where reduced data goes (``$HPCVIZ_HOME/reduced``).
        cluster: where the reduction runs (a LocalDaskCluster when empty).
        launcher: where the viz server runs when the link is opened.
        gateway: the gateway that hands out the link (from the environment
            when empty, as ``hpcviz visualize`` sets it).
        warm: start the viz server now instead of on the first click.
        copy_to: also copy the reduced data to this fsspec URL
            (``az://container/prefix``; see ``reduce_dataset``); the copy's
            URL is in the summary table.
        copy_storage_options: fsspec options for ``copy_to`` that are not
            secrets (they are stored with the run's parameters); the
            credentials of ``storage_credentials`` when empty.
        storage_credentials: for data in Azure Blob, prefect-azure's
            AzureBlobStorageCredentials block or the name of a saved one
            (``"runs"``): it reads ``source`` and writes ``copy_to``. The keys
            stay out of the run's parameters, logs and artifacts. The
            environment's credentials (``AZURE_STORAGE_CONNECTION_STRING``,
            ...) when empty.

    Example:
        >>> publication = visualize_simulation("run/output.pvd", recipe="overview.yaml")
        >>> print(publication.link)

        Data in Blob, with a credentials block saved once as "runs":

        >>> visualize_simulation("az://runs/ocean.zarr", storage_credentials="runs",
        ...                      copy_to="az://runs/reduced")
    """
    # A given recipe needs no ranges: a big volume is then read once, by the reduction, not twice.
    summary = summarize_dataset(source, storage_credentials=storage_credentials, ranges=recipe is None)
    reduced = reduce_dataset(source, recipe, summary=summary, out_dir=out_dir, cluster=cluster,
                             copy_to=copy_to, copy_storage_options=copy_storage_options,
                             storage_credentials=storage_credentials)
    thumbnail = render_thumbnail(reduced)
    return publish_visualization(
        reduced,
        summary=summary,
        thumbnail=thumbnail,
        title=title,
        gateway=gateway,
        launcher=launcher,
        warm=warm,
    )
