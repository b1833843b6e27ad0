"""The visualize-simulation flow under a real Prefect API, on a real Dask cluster,
publishing to a real gateway. Artifacts and logs are read back through the
Prefect client, the way the UI reads them."""

from __future__ import annotations

import base64
import html
import re

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

from prefect_hpcviz.blocks import LocalDaskCluster, LocalLauncher, VizGateway
from prefect_hpcviz.cli.services import flush_prefect_logs_and_events
from prefect_hpcviz.flows import visualize_simulation
from prefect_hpcviz.viz.errors import InputError


@pytest.fixture(scope="module")
def flow_run(prefect_harness, gateway, small_simulation, tmp_path_factory):
    out = tmp_path_factory.mktemp("reduced")
    state = visualize_simulation(
        str(small_simulation),
        recipe={"steps": [{"coarsen": {"factor": 2}}, {"contour": {"field": "pressure", "values": [0.5]}}]},
        title="Small synthetic run",
        out_dir=str(out),
        cluster=LocalDaskCluster(n_workers=2, threads_per_worker=1),
        launcher=LocalLauncher(),
        gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
        return_state=True,
    )
    assert state.is_completed(), state.message
    flush_prefect_logs_and_events()  # logs are sent in batches; deliver them before reading
    return state.state_details.flow_run_id, state.result(), out


async def _artifacts(flow_run_id):
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


async def _logs(flow_run_id):
    async with get_client() as client:
        return await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


async def test_flow_publishes_markdown_link_and_table_artifacts(flow_run):
    flow_run_id, publication, _ = flow_run
    artifacts = await _artifacts(flow_run_id)
    by_key = {a.key: a for a in artifacts if a.key is not None}
    assert set(by_key) == {"hpcviz-small-synthetic-run", "hpcviz-small-synthetic-run-link", "hpcviz-small-synthetic-run-summary"}
    # The reduction's progress bar: unkeyed (it belongs to this run only), finished.
    progress = [a for a in artifacts if a.key is None]
    assert [a.type for a in progress] == ["progress"] and progress[0].data == 100.0

    markdown = by_key["hpcviz-small-synthetic-run"].data
    match = re.search(r'<a href="([^"]+)"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', markdown)
    assert match, "the thumbnail is an image embedded as a data: URI that links to the view"
    assert html.unescape(match.group(1)) == publication.link
    assert base64.b64decode(match.group(2))[:8] == b"\x89PNG\r\n\x1a\n"

    link_artifact = by_key["hpcviz-small-synthetic-run-link"]
    assert f"]({publication.link})" in link_artifact.data  # Prefect stores link artifacts as markdown links

    table = by_key["hpcviz-small-synthetic-run-summary"]
    assert table.type == "table"
    table = table.data
    text = str(table)
    for expected in ("field pressure", "field velocity", "time steps", "bytes before reduction", "bytes after reduction", "reduction time"):
        assert expected in text
    # A given recipe needs no ranges, so the volume is read once, by the reduction: the table gives the reduced ones.
    assert "range not read; reduced" in text


async def test_flow_logs_the_link_so_it_is_clickable_in_the_logs_tab(flow_run):
    flow_run_id, publication, _ = flow_run
    messages = [log.message for log in await _logs(flow_run_id)]
    assert any(publication.link in message for message in messages)


def test_the_link_is_exchanged_for_a_cookie_at_the_gateway(flow_run, gateway):
    _, publication, _ = flow_run
    response = httpx.get(publication.link, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].endswith(f"/s/{publication.viz_id}/")
    assert "token=" not in response.headers["location"]
    assert "httponly" in response.headers["set-cookie"].lower()


def test_a_second_run_reuses_the_reduced_data(flow_run, gateway, small_simulation):
    _, first, out = flow_run
    second = visualize_simulation(
        str(small_simulation),
        recipe={"steps": [{"coarsen": {"factor": 2}}, {"contour": {"field": "pressure", "values": [0.5]}}]},
        out_dir=str(out),
        cluster=LocalDaskCluster(n_workers=1, processes=False),
        gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
    )
    assert second.data == first.data
    assert second.viz_id != first.viz_id


def test_an_unknown_field_in_the_recipe_fails_the_flow_with_a_clear_message(prefect_harness, gateway, small_simulation, tmp_path):
    state = visualize_simulation(
        str(small_simulation),
        recipe={"steps": [{"contour": {"field": "temperature", "values": [1.0]}}]},
        out_dir=str(tmp_path),
        cluster=LocalDaskCluster(n_workers=1, processes=False),
        gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(InputError, match="temperature"):
        state.result()
    assert list(tmp_path.iterdir()) == [], "nothing half-written is left behind"
