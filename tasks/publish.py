"""Task: register reduced data with the gateway and publish its link."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task

from prefect_hpcviz.blocks.azure import AzureBatchLauncher
from prefect_hpcviz.blocks.gateway import VizGateway
from prefect_hpcviz.blocks.launchers import LocalLauncher, SlurmLauncher
from prefect_hpcviz.tasks.artifacts import VizArtifacts, create_viz_artifacts
from prefect_hpcviz.viz.datasets import DatasetSummary
from prefect_hpcviz.viz.reduce import ReducedDataset


@dataclass(frozen=True)
class Publication:
    """A published visualization: its link, where the data is, its artifacts."""

    viz_id: str
    link: str
    url: str
    expires_at: str
    data: str
    artifacts: VizArtifacts


@task(name="publish-visualization", retries=2, retry_delay_seconds=[1, 5])
def publish_visualization(
    reduced: ReducedDataset,
    *,
    summary: DatasetSummary,
    thumbnail: bytes,
    title: str | None = None,
    gateway: VizGateway | None = None,
    launcher: LocalLauncher | SlurmLauncher | AzureBatchLauncher | None = None,
    app: str = "explorer",
    warm: bool = False,
    artifact_key: str | None = None,
) -> Publication:
    """Register ``reduced`` with the gateway; publish link, thumbnail and table.

    The link is signed and expires; opening it starts a viz server through
    ``launcher`` (at once if ``warm``), so no node is held until someone looks.

    Example:
        >>> pub = publish_visualization(reduced, summary=summary, thumbnail=png,
        ...                             gateway=VizGateway.load("site-gateway"))
        >>> pub.link
        'https://viz.example.org/v/3f2a...?token=...'
    """
    logger = get_run_logger()
    gateway = gateway or VizGateway.from_env()
    launcher = launcher or LocalLauncher()
    title = title or Path(summary.source).stem
    registration = gateway.get_client().register(
        data=str(reduced.path), app=app, title=title, launcher=launcher.launcher_spec(), warm=warm
    )
    artifacts = create_viz_artifacts(
        registration.link,
        title=title,
        thumbnail_png=thumbnail,
        summary=summary,
        reduced=reduced,
        expires_at=registration.expires_at,
        key=artifact_key,
    )
    logger.info("3D view of %s: %s", title, registration.link)
    return Publication(
        viz_id=registration.id,
        link=registration.link,
        url=registration.url,
        expires_at=registration.expires_at,
        data=str(reduced.path),
        artifacts=artifacts,
    )
