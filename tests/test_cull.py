"""The culling flow and the gateway's POST /api/cull: a real gateway launches a real
viz server; the flow (real Prefect API) asks the gateway to stop idle sessions
and reports the one it stopped."""

from __future__ import annotations

import json

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from prefect_hpcviz.blocks import VizGateway
from prefect_hpcviz.flows import cull_idle_sessions
from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayConfig


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    # Idle after 50 ms; the gateway's own culler waits an hour, so only the flow culls.
    config = GatewayConfig(host="127.0.0.1", port=0, state_dir=tmp_path_factory.mktemp("gateway"),
                           idle_timeout_s=0.05, poll_interval_s=3600.0)
    with EmbeddedGateway(config) as running:
        yield running


def test_cull_needs_the_admin_token(gateway):
    response = httpx.post(f"{gateway.local_url}/api/cull", trust_env=False)
    assert response.status_code == 401
    assert "/api/cull" in httpx.get(f"{gateway.local_url}/api/openapi.json", trust_env=False).json()["paths"]


def test_the_culling_flow_stops_an_idle_session_and_reports_it(prefect_harness, gateway, small_reduced):
    with gateway.client() as client:
        idle = client.register(str(small_reduced.path), title="idle", warm=True)
        session = client.wait_ready(idle.id, timeout=120, launch=False)
        never_started = client.register(str(small_reduced.path), title="never opened")

    state = cull_idle_sessions(VizGateway(url=gateway.url, admin_token=gateway.admin_token), return_state=True)
    assert state.is_completed(), state.message
    stopped = state.result()
    assert [s["id"] for s in stopped] == [session["id"]]
    assert "without activity" in stopped[0]["reason"]

    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    table = next(a for a in artifacts if a.key == "hpcviz-culled-sessions")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["session"], r["visualization"], r["state"]) for r in rows] == [(session["id"], idle.id, "stopped")]
    with gateway.client() as client:
        assert client.get(idle.id)["session"]["state"] == "stopped"
        assert client.get(never_started.id)["session"] is None, "nothing is started by a sweep"


def test_a_sweep_with_nothing_to_stop_says_so(prefect_harness, gateway):
    state = cull_idle_sessions(VizGateway(url=gateway.url, admin_token=gateway.admin_token), return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == []
