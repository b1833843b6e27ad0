"""Flow: regenerate the canned visualizations of a catalog (nightly, from deployments/prefect.yaml).

For each entry, in parallel: fingerprint the inputs, reduce only when the
fingerprint changed (Prefect task cache + the engine's own cache), render the
preset's thumbnails, register the view with the gateway and update the
entry's keyed artifact ``hpcviz-canned-<slug>``. Then one gallery artifact
(``hpcviz-canned-gallery``: every thumbnail links to its interactive view)
and one report (``hpcviz-canned-report``: what was reduced, reused or failed
and why).

One failing entry does not stop the others. When any failed, the run ends
**Failed** with a message naming them, after the other entries and the
gallery were updated: a nightly job that quietly lost a view should be red in
the UI and reach whoever the operator's automations notify, while the report
artifact says what still worked.
"""

from __future__ import annotations

import base64
import contextlib
import html
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture, wait
from prefect.states import Failed, State

from prefect_hpcviz.blocks import LocalDaskCluster, LocalLauncher, VizGateway
from prefect_hpcviz.blocks.blob_credentials import BlobCredentials, blob_storage_options, is_blob_url
from prefect_hpcviz.tasks.canned import (
    CannedView,
    fingerprint_entry,
    publish_canned,
    reduce_canned,
    needs_reduction,
    render_canned_thumbnails,
)
from prefect_hpcviz.viz.catalog import load_catalog
from prefect_hpcviz.viz.paths import hpcviz_home

GALLERY_KEY = "hpcviz-canned-gallery"
REPORT_KEY = "hpcviz-canned-report"


@dataclass
class EntryOutcome:
    """What happened to one entry in one run.

    ``status`` is ``reduced`` (new inputs, reduced now), ``unchanged`` (the
    reduction was reused) or ``failed`` (``reason`` says why).
    """

    name: str
    status: str
    reason: str = ""
    view: CannedView | None = None


@dataclass
class CannedReport:
    """The outcome of every entry of a regeneration run, in catalog order."""

    catalog: str
    entries: list[EntryOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[EntryOutcome]:
        """The entries that failed."""
        return [e for e in self.entries if e.status == "failed"]

    def count(self, status: str) -> int:
        """How many entries ended with ``status``."""
        return sum(e.status == status for e in self.entries)


def resolve_gateway(gateway: VizGateway | str | None) -> VizGateway:
    """A gateway block, the name of a saved one, or (None) the one in the environment."""
    if isinstance(gateway, VizGateway):
        return gateway
    if gateway:
        return VizGateway.load(gateway)
    return VizGateway.from_env()


@flow(name="regenerate-canned")
def regenerate_canned(
    catalog: str,
    out_dir: str | None = None,
    gateway: VizGateway | str | None = None,
    cluster: LocalDaskCluster | None = None,
    launcher: LocalLauncher | None = None,
    storage_credentials: BlobCredentials | None = None,
) -> CannedReport | State:
    """Bring every canned visualization of a catalog up to date.

    Args:
        catalog: the catalog YAML file (see ``viz/catalog.py``).
        out_dir: where reduced data and thumbnails go (``$HPCVIZ_HOME/canned``).
        gateway: a VizGateway block, the name of a saved one, or None for
            ``HPCVIZ_GATEWAY_URL`` / ``HPCVIZ_GATEWAY_TOKEN``.
        cluster: where reductions run; started only when an entry needs
            reducing (a LocalDaskCluster when empty).
        launcher: where the viz servers run when a link is opened.
        storage_credentials: prefect-azure's AzureBlobStorageCredentials
            block, or the name of a saved one, for entries whose source is in
            Azure Blob (``az://``) and that give no ``storage_options`` of
            their own; the keys stay out of the run's parameters and logs.

    Returns:
        The report; the run ends Failed (message: which entries and why) when
        any entry failed.

    Example:
        >>> report = regenerate_canned("catalog.yaml", gateway="site-gateway")
        >>> [(e.name, e.status) for e in report.entries]
        [('Vortex overview', 'unchanged'), ('Velocity from above', 'reduced')]
    """
    logger = get_run_logger()
    entries = load_catalog(catalog).entries  # a bad catalog fails the run here, naming entry and key
    if storage_credentials is not None:
        options = blob_storage_options(storage_credentials)
        entries = [entry.model_copy(update={"storage_options": options})
                   if is_blob_url(entry.source) and not entry.storage_options else entry for entry in entries]
    viz_gateway = resolve_gateway(gateway)
    out = str(Path(out_dir).expanduser() if out_dir else hpcviz_home() / "canned")

    fingerprints = {entry.slug: fingerprint_entry.submit(entry) for entry in entries}
    wait(list(fingerprints.values()))
    stale = {
        entry.slug: entry.name for entry in entries
        if fingerprints[entry.slug].state.is_completed() and needs_reduction(out, fingerprints[entry.slug].result())
    }
    if stale:
        logger.info("to reduce: %s", ", ".join(stale.values()))
    else:
        logger.info("no entry needs reducing; no Dask cluster started")

    chains: dict[str, list[PrefectFuture]] = {}
    with _scheduler(cluster, needed=bool(stale)) as scheduler:
        for entry in entries:
            fingerprint = fingerprints[entry.slug]
            reduce = reduce_canned.with_options(refresh_cache=entry.slug in stale)
            reduced = reduce.submit(entry, fingerprint, out, scheduler)
            thumbnails = render_canned_thumbnails.submit(entry, reduced)
            published = publish_canned.submit(entry, fingerprint, reduced, thumbnails, viz_gateway, launcher)
            chains[entry.slug] = [fingerprint, reduced, thumbnails, published]
        wait([future for chain in chains.values() for future in chain])

    report = CannedReport(catalog=str(catalog), entries=[_outcome(entry.name, chains[entry.slug]) for entry in entries])
    create_markdown_artifact(gallery_markdown(report), key=GALLERY_KEY, description="Canned visualizations")
    create_table_artifact(report_rows(report), key=REPORT_KEY, description="What the last regeneration did")
    logger.info("%d reduced, %d unchanged, %d failed", report.count("reduced"), report.count("unchanged"),
                report.count("failed"))
    if report.failed:
        reasons = "; ".join(f"{e.name}: {e.reason}" for e in report.failed)
        return Failed(message=f"{len(report.failed)} of {len(report.entries)} canned visualizations failed: {reasons}",
                      data=report)
    return report


@contextlib.contextmanager
def _scheduler(cluster: LocalDaskCluster | None, *, needed: bool) -> Iterator[str | None]:
    """The address of a Dask scheduler shared by the flow's reductions; None when nothing needs one."""
    if not needed:
        yield None
        return
    cluster = cluster or LocalDaskCluster()
    if cluster.address:
        yield cluster.address
        return
    with cluster.get_client() as client:
        yield client.scheduler.address


def _outcome(name: str, chain: list[PrefectFuture]) -> EntryOutcome:
    """An entry's outcome: the first failed task of its chain says why."""
    for future in chain:
        state = future.state
        if state.is_failed() or state.is_crashed():
            error = state.result(raise_on_failure=False)
            reason = str(error) if isinstance(error, BaseException) else (state.message or state.name)
            return EntryOutcome(name, "failed", reason=reason)
    reduced_state = chain[1].state
    view = chain[-1].result()
    status = "unchanged" if reduced_state.name == "Cached" or chain[1].result().cached else "reduced"
    return EntryOutcome(name, status, view=view)


def gallery_markdown(report: CannedReport) -> str:
    """The gallery: one thumbnail per canned view, each linking to its interactive view."""
    cards = []
    for entry in report.entries:
        if entry.view is None:
            continue
        view = entry.view
        image = base64.b64encode(view.thumbnail).decode("ascii")
        title = html.escape(view.name, quote=True)
        cards.append(
            f'<a href="{html.escape(view.link, quote=True)}" title="Open the 3D view: {title}">'
            f'<img src="data:image/png;base64,{image}" alt="{title}" width="{_png_width(view.thumbnail)}"></a>'
        )
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Canned visualizations\n\nUpdated {when}. Click a picture to open its interactive 3D view "
             "(the server starts on click and stops when idle).\n"]
    if cards:
        lines.append("<div>" + "\n".join(cards) + "</div>\n")
    lines.append("| view | status | link valid until |\n|---|---|---|")
    for entry in report.entries:
        if entry.view is not None:
            lines.append(f"| [{entry.name}]({entry.view.link}) | {entry.status} | {entry.view.expires_at} |")
        else:
            reason = entry.reason.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {entry.name} | **failed**: {reason} | |")
    return "\n".join(lines) + "\n"


def report_rows(report: CannedReport) -> list[dict[str, str]]:
    """One row per entry: name, status, fingerprint, reason."""
    return [
        {
            "name": e.name,
            "status": e.status,
            "fingerprint": e.view.fingerprint if e.view else "",
            "reduced data": e.view.reduced_path if e.view else "",
            "reason": e.reason,
        }
        for e in report.entries
    ]


def _png_width(png: bytes) -> int:
    return int.from_bytes(png[16:20], "big")
