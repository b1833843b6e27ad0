"""Tasks of the canned-visualization flow: fingerprint, reduce (cached), render, publish.

The reduction is cached twice: Prefect caches the task on the entry's input
fingerprint (a rerun with unchanged inputs does not run it at all), and the
engine keeps its own on-disk cache by the same key (a result survives a lost
Prefect result store). A cached result whose directory was deleted is not
used: the flow refreshes the cache of an entry whose reduction is not on disk
(:func:`needs_reduction`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from prefect_hpcviz.blocks.gateway import VizGateway
from prefect_hpcviz.blocks.launchers import LocalLauncher
from prefect_hpcviz.tasks.artifacts import viz_markdown
from prefect_hpcviz.tasks.retry import unless_bad_input
from prefect_hpcviz.viz.catalog import CatalogEntry, InputFingerprint, digest, fingerprint_text, input_fingerprint
from prefect_hpcviz.viz.gateway.client import GatewayClient, Registration
from prefect_hpcviz.viz.reduce import ReducedDataset
from prefect_hpcviz.viz.reduce.result import MANIFEST_NAME

_RENDER_LOCK = threading.Lock()  # one offscreen render at a time: entries run in threads


@dataclass(frozen=True)
class CannedView:
    """A published canned visualization: what the gallery shows of it."""

    name: str
    slug: str
    link: str
    viz_id: str
    expires_at: str
    thumbnail: bytes
    reduced_path: str
    fingerprint: str


def canned_artifact_key(slug: str) -> str:
    """The stable artifact key of one canned visualization (its history in the UI).

    Example:
        >>> canned_artifact_key("vortex-overview")
        'hpcviz-canned-vortex-overview'
    """
    return f"hpcviz-canned-{slug}"[:64].rstrip("-")


def reduced_dir(out_dir: str, fingerprint: InputFingerprint) -> Path:
    """Where the engine puts (or has put) this fingerprint's reduction."""
    return Path(out_dir) / fingerprint.key


def needs_reduction(out_dir: str, fingerprint: InputFingerprint) -> bool:
    """True when this fingerprint's reduction is not on disk (new inputs, or the result was deleted).

    The flow then runs :func:`reduce_canned` with ``refresh_cache=True``: a
    Prefect cache entry must never stand for a directory that is gone.
    """
    return not (reduced_dir(out_dir, fingerprint) / MANIFEST_NAME).is_file()


def _reduce_cache_key(_context: Any, parameters: dict[str, Any]) -> str:
    fingerprint: InputFingerprint = parameters["fingerprint"]
    return f"hpcviz-canned-reduce-{fingerprint.key}-{digest(os.path.abspath(str(parameters['out_dir'])))[:12]}"


def _thumbnail_cache_key(_context: Any, parameters: dict[str, Any]) -> str | None:
    entry: CatalogEntry = parameters["entry"]
    reduced: ReducedDataset = parameters["reduced"]
    if not (Path(reduced.path) / MANIFEST_NAME).is_file():
        return None
    sizes = ",".join(f"{w}x{h}" for w, h in entry.thumbnails)
    return "hpcviz-canned-thumbnails-" + digest(str(reduced.path), reduced.key, entry.view.to_json(), sizes)[:32]


@task(name="fingerprint-inputs", task_run_name="fingerprint {entry.name}", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=2, retry_condition_fn=unless_bad_input)
def fingerprint_entry(entry: CatalogEntry) -> InputFingerprint:
    """Stat the entry's input files and hash them with its recipe (no data read).

    Example:
        >>> fingerprint_entry(entry).key
        '3f2a9c0d1b7e4a55'
    """
    fingerprint = input_fingerprint(entry)
    get_run_logger().info("%s: %s -> %s", entry.name, fingerprint.source, fingerprint_text(fingerprint))
    return fingerprint


@task(name="reduce-canned", task_run_name="reduce {entry.name}", cache_key_fn=_reduce_cache_key,
      persist_result=True, retries=1, retry_delay_seconds=5, retry_condition_fn=unless_bad_input)
def reduce_canned(
    entry: CatalogEntry, fingerprint: InputFingerprint, out_dir: str, scheduler: str | None = None
) -> ReducedDataset:
    """Reduce an entry's source with its recipe, unless this fingerprint was reduced before.

    Args:
        entry: the catalog entry.
        fingerprint: from :func:`fingerprint_entry`; also the Prefect cache key.
        out_dir: where reduced directories live.
        scheduler: address of the flow's shared Dask scheduler (None: a
            temporary cluster of the engine's own).

    Example:
        >>> reduced = reduce_canned(entry, fingerprint, "/scratch/canned", "tcp://127.0.0.1:8786")
    """
    from distributed import Client

    from prefect_hpcviz.viz import reduce as engine
    from prefect_hpcviz.viz.datasets import open_dataset

    dataset = open_dataset(fingerprint.source, storage_options=entry.storage_options or None)
    if scheduler:
        with Client(scheduler) as client:
            reduced = engine.reduce_dataset(dataset, fingerprint.recipe, out_dir, client=client)
    else:
        reduced = engine.reduce_dataset(dataset, fingerprint.recipe, out_dir)
    get_run_logger().info(
        "%s: %s %.1f MB to %.1f MB -> %s", entry.name,
        "reused the engine's earlier reduction of" if reduced.cached else f"reduced in {reduced.seconds:.1f} s",
        reduced.bytes_in / 1e6, reduced.bytes_out / 1e6, reduced.path,
    )
    return reduced


@task(name="render-canned-thumbnails", task_run_name="thumbnails {entry.name}",
      cache_key_fn=_thumbnail_cache_key, persist_result=True, retries=1)
def render_canned_thumbnails(entry: CatalogEntry, reduced: ReducedDataset) -> dict[str, bytes]:
    """PNG thumbnails of the entry's view preset, one per size, keyed ``"WIDTHxHEIGHT"``.

    They are also written (atomically) next to the reduced data, in
    ``<out_dir>/thumbnails/<slug>-<W>x<H>.png``.

    Example:
        >>> sorted(render_canned_thumbnails(entry, reduced))
        ['320x200', '640x400']
    """
    from prefect_hpcviz.viz.thumbnail import render_thumbnail

    folder = Path(reduced.path).parent / "thumbnails"
    folder.mkdir(parents=True, exist_ok=True)
    pictures = {}
    for width, height in entry.thumbnails:
        with _RENDER_LOCK:
            png = render_thumbnail(reduced, size=(width, height), view=entry.view)
        _write_atomically(folder / f"{entry.slug}-{width}x{height}.png", png)
        pictures[f"{width}x{height}"] = png
    return pictures


@task(name="publish-canned", task_run_name="publish {entry.name}", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=unless_bad_input)
def publish_canned(
    entry: CatalogEntry,
    fingerprint: InputFingerprint,
    reduced: ReducedDataset,
    thumbnails: dict[str, bytes],
    gateway: VizGateway,
    launcher: LocalLauncher | None = None,
) -> CannedView:
    """Register the view (with its preset) with the gateway; update the entry's keyed artifact.

    Example:
        >>> view = publish_canned(entry, fingerprint, reduced, thumbnails, VizGateway.load("site"))
        >>> view.link
        'https://viz.example.org/v/3f2a...?token=...'
    """
    with gateway.get_client() as client:
        registration = register_once(
            client, data=str(reduced.path), app=entry.app, title=entry.name,
            launcher=(launcher or LocalLauncher()).launcher_spec(), view=entry.view.to_dict() or None,
        )
    expires = registration.expires_at.isoformat(timespec="minutes")
    largest = max(thumbnails, key=lambda size: int(size.split("x")[0]))
    smallest = min(thumbnails, key=lambda size: int(size.split("x")[0]))
    rows = [
        {"property": "source", "value": fingerprint.source},
        {"property": "input fingerprint", "value": fingerprint_text(fingerprint)},
        {"property": "recipe", "value": entry.recipe_file or ("inline" if entry.recipe else "default for the data")},
        {"property": "view preset", "value": f"`{entry.view.to_json()}`"},
        {"property": "reduction", "value": f"{reduced.bytes_in / 1e6:,.1f} MB to {reduced.bytes_out / 1e6:,.1f} MB"
                                           f" in {reduced.seconds:.1f} s" + (", reused" if reduced.cached else "")},
        {"property": "time steps", "value": str(len(reduced.time_values))},
        {"property": "thumbnails", "value": ", ".join(thumbnails)},
    ]
    create_markdown_artifact(
        viz_markdown(registration.link, entry.name, thumbnails[largest], rows, expires),
        key=canned_artifact_key(entry.slug),
        description=f"Canned view: {entry.name}",
    )
    get_run_logger().info("3D view of %s: %s", entry.name, registration.link)
    return CannedView(
        name=entry.name, slug=entry.slug, link=registration.link, viz_id=registration.id, expires_at=expires,
        thumbnail=thumbnails[smallest], reduced_path=str(reduced.path), fingerprint=fingerprint.key,
    )


def register_once(client: GatewayClient, **registration: Any) -> Registration:
    """A fresh link to the gateway's visualization with exactly these settings; registered if there is none.

    An unchanged canned view keeps its visualization night after night (the
    gateway's registry does not grow); only its link is renewed.

    Example:
        >>> register_once(client, data="/canned/3f2a9c0d1b7e4a55", app="explorer",
        ...               title="Vortex overview", launcher={"kind": "local", "options": {}}, view=None).link
        'https://viz.example.org/v/Ox0H...?token=...'
    """
    wanted = {key: registration[key] for key in ("data", "app", "title", "launcher", "view")}
    for known in client.list():
        if not known.get("revoked") and all(known.get(key) == value for key, value in wanted.items()):
            return client.new_link(known["id"])
    return client.register(**registration)


def _write_atomically(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
