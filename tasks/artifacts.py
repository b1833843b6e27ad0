"""Artifacts that put a visualization in the Prefect UI.

Siblings of Prefect's own ``create_link_artifact``: small functions that take
plain values and return artifact ids.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from uuid import UUID

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from prefect_hpcviz.viz.datasets import DatasetSummary
from prefect_hpcviz.viz.reduce import ReducedDataset


@dataclass(frozen=True)
class VizArtifacts:
    """Ids of the three artifacts one visualization publishes."""

    markdown: UUID
    link: UUID
    table: UUID


def artifact_key(title: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for a title.

    Example:
        >>> artifact_key("Run 42: Vortex shedding")
        'hpcviz-run-42-vortex-shedding'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"hpcviz-{slug}"[:60].rstrip("-")


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _range(values: tuple[float, float]) -> str:
    if any(math.isnan(v) for v in values):
        return "not read"
    return f"{values[0]:.4g} … {values[1]:.4g}"


def summary_rows(summary: DatasetSummary, reduced: ReducedDataset) -> list[dict[str, str]]:
    """The rows of the summary table: what went in, what came out, how long it took."""
    kept = len(reduced.time_values)
    times = summary.time_values
    span = f" (t = {times[0]:.4g} … {times[-1]:.4g})" if len(times) > 1 else ""
    dims = "×".join(str(d) for d in summary.dimensions) if summary.dimensions else f"{summary.n_cells:,} cells"
    rows = [
        {"property": "source", "value": summary.source},
        {"property": "format", "value": f"{summary.format}, {summary.kind} {dims}"},
        {"property": "time steps", "value": f"{len(times)}{span}, {kept} kept"},
    ]
    reduced_ranges = {f.name: f.range for f in reduced.fields}
    for field in summary.fields:
        kind = "scalar" if field.components == 1 else f"vector ({field.components}), magnitude"
        after = reduced_ranges.get(field.name)
        value = f"{field.association} {kind}, range {_range(field.range)}"
        if after is not None:
            value += f"; reduced {_range(after)}"
        rows.append({"property": f"field {field.name}", "value": value})
    rows += [
        {"property": "bytes before reduction", "value": f"{_megabytes(reduced.bytes_in)} ({reduced.bytes_in:,} B)"},
        {"property": "bytes after reduction", "value": f"{_megabytes(reduced.bytes_out)} ({reduced.bytes_out:,} B)"},
        {
            "property": "reduction time",
            "value": f"{reduced.seconds:.1f} s" + (" (result reused from cache)" if reduced.cached else ""),
        },
        {"property": "layers", "value": ", ".join(layer.name for layer in reduced.layers) or "none"},
    ]
    if reduced.remote_url:
        rows.append({"property": "reduced data copied to", "value": reduced.remote_url})
    return rows


def _png_width(png: bytes) -> int:
    """Width from the PNG header (bytes 16-20 of the IHDR chunk)."""
    return int.from_bytes(png[16:20], "big")


def viz_markdown(link: str, title: str, thumbnail_png: bytes, rows: list[dict[str, str]], expires_at: str) -> str:
    """Markdown with the thumbnail (a data: URI) linking to the 3D view."""
    image = base64.b64encode(thumbnail_png).decode("ascii")
    alt = html.escape(title, quote=True)
    facts = "\n".join(f"| {r['property']} | {r['value']} |" for r in rows)
    # HTML, in a <div>: the Prefect UI's markdown renders data: images, but
    # not an image nested in a markdown link, and splits a bare inline <a>.
    return (
        f"## {title}\n\n"
        f'<div><a href="{html.escape(link, quote=True)}"><img src="data:image/png;base64,{image}" alt="{alt}" '
        f'width="{_png_width(thumbnail_png)}"></a></div>\n\n'
        f"**[Open the 3D view]({link})** (opens an interactive view; "
        f"the server starts on click and stops when idle; link valid until {expires_at})\n\n"
        f"| property | value |\n|---|---|\n{facts}\n"
    )


def create_viz_artifacts(
    link: str,
    *,
    title: str,
    thumbnail_png: bytes,
    summary: DatasetSummary,
    reduced: ReducedDataset,
    expires_at: str,
    key: str | None = None,
) -> VizArtifacts:
    """Publish a visualization: markdown with thumbnail, link, and summary table.

    Example:
        >>> create_viz_artifacts(reg.link, title="run 42", thumbnail_png=png,
        ...                      summary=summary, reduced=reduced, expires_at=reg.expires_at)
    """
    key = key or artifact_key(title)
    rows = summary_rows(summary, reduced)
    return VizArtifacts(
        markdown=create_markdown_artifact(
            viz_markdown(link, title, thumbnail_png, rows, expires_at),
            key=key,
            description=f"3D view of {title}",
        ),
        link=create_link_artifact(link, link_text=f"Open 3D view: {title}", key=f"{key}-link"[:64]),
        table=create_table_artifact(rows, key=f"{key}-summary"[:64], description=f"What {title} holds"),
    )
