"""Azure Batch in reverse mode, and the issue's end to end: Blob -> Batch Dask -> Batch viz server -> Chromium.

The gateways here refuse every directly reported host (``allowed_backend_hosts``
matches nothing a server could report, as in tests/test_reverse_tunnel.py), so
a session that works was reached through the reverse connection the Batch
task dialed. Batch is the HTTP test double (tests/azure_batch_double.py: real
azure-batch SDK, tasks are real local processes); Blob is Azurite; the flow
runs on a real Prefect API; the view renders in Chromium.
"""

from __future__ import annotations

import html
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from azure_batch_double import BatchDouble  # noqa: E402

from prefect_hpcviz.blocks import AzureBatchDaskCluster, AzureBatchLauncher, VizGateway  # noqa: E402
from prefect_hpcviz.viz.errors import LaunchError  # noqa: E402
from prefect_hpcviz.viz.gateway import EmbeddedGateway  # noqa: E402
from tests.helpers import is_rendered  # noqa: E402

NO_DIRECT_REPORTS = r"^reverse-mode-only\.invalid$"  # no server can report a host matching this
KEY_ENV = "HPCVIZ_TEST_BATCH_KEY"  # the gateway reads the Batch key from its own environment
VIEW_IMAGE_READY = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"


@pytest.fixture
def double(tmp_path, monkeypatch):
    with BatchDouble(tmp_path / "nodes") as batch:
        batch.add_pool("viz", nodes=1, slots_per_node=2)
        batch.add_pool("reduce", nodes=1, slots_per_node=2)
        monkeypatch.setenv(KEY_ENV, batch.account_key)
        yield batch


def reverse_launcher(double: BatchDouble) -> AzureBatchLauncher:
    """A site's block for a pool outside the gateway's network: default serve_host, ``reverse=True``."""
    return AzureBatchLauncher(account_url=double.url, account_name=double.account_name, account_key_env=KEY_ENV,
                              pool_id="viz", python=sys.executable, reverse=True)  # fmt: skip


def no_direct_gateway(state_dir: Path) -> EmbeddedGateway:
    return EmbeddedGateway(state_dir=state_dir, allowed_backend_hosts=NO_DIRECT_REPORTS, launch_timeout_s=120,
                           poll_interval_s=0.5)  # fmt: skip


def stop_session(gateway: EmbeddedGateway, session_id: str) -> dict:
    return httpx.post(f"{gateway.local_url}/api/sessions/{session_id}/stop", timeout=60, trust_env=False,
                      headers={"Authorization": f"Bearer {gateway.admin_token}"}).json()  # fmt: skip


def test_the_reverse_setting_goes_to_the_gateway_and_not_to_the_backend(double):
    spec = reverse_launcher(double).launcher_spec()
    assert spec["kind"] == "azure_batch" and spec["options"]["reverse"] is True
    plain = AzureBatchLauncher(account_url=double.url, pool_id="viz").launcher_spec()
    assert "reverse" not in plain["options"]
    assert "reverse" not in reverse_launcher(double).backend_options()


def test_a_batch_task_reached_only_through_the_reverse_connection_serves_and_stops(double, small_reduced, tmp_path):
    with no_direct_gateway(tmp_path / "gw") as gateway, gateway.client() as client:
        direct = reverse_launcher(double).model_copy(update={"reverse": False, "serve_host": "127.0.0.1"})
        control = client.register(str(small_reduced.path), launcher=direct.launcher_spec(), warm=True)
        with pytest.raises(LaunchError) as info:  # this gateway takes no direct report: only a tunnel can serve
            client.wait_ready(control.id, timeout=60, launch=False)
        assert "403" in str(info.value) and "not allowed" in str(info.value), str(info.value)

        reg = client.register(str(small_reduced.path), title="batch reverse",
                              launcher=reverse_launcher(double).launcher_spec(), warm=True)  # fmt: skip
        session = client.wait_ready(reg.id, timeout=120)
        assert gateway.parts.tunnels.port_of(session["id"]) == session["port"], "the proxy's port is the tunnel's"
        batch_job, task_id = session["job_id"].split(":")
        task = double.tasks[(batch_job, task_id)]
        assert "--reverse" in task.body["commandLine"] and "--advertise-host" not in task.body["commandLine"]
        process = double.process_of(batch_job, task_id)
        assert process.poll() is None

        http = httpx.Client(base_url=gateway.local_url, trust_env=False, timeout=60)
        opened = http.get(reg.link[len(gateway.url):], headers={"Accept": "text/html"})
        assert opened.status_code == 303, opened.text
        cookie = opened.headers["set-cookie"].split(";")[0]
        page = http.get(f"/s/{reg.id}/index.html", headers={"Cookie": cookie, "Accept": "text/html"})
        assert page.status_code == 200 and '<div id="app">' in page.text, "the explorer's page, through the tunnel"

        assert stop_session(gateway, session["id"])["state"] == "stopped"
        assert process.poll() is not None and double.tasks[(batch_job, task_id)].state == "completed"
        assert gateway.parts.tunnels.port_of(session["id"]) is None


@pytest.mark.azurite
@pytest.mark.browser
def test_blob_dataset_reduced_on_batch_dask_served_by_a_batch_task_through_the_reverse_connection_renders(
    azurite, double, chromium_browser, prefect_harness, small_simulation, tmp_path, monkeypatch
):
    import fsspec

    from prefect_hpcviz.flows import visualize_simulation

    # Credentials from the environment, as on a site: the flow, the Dask workers (Batch tasks) and
    # the viz server all read az:// through adlfs with them.
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("HPCVIZ_CACHE_DIR", str(tmp_path / "cache"))
    container = azurite.new_container("e2e")
    fsspec.filesystem("az", **azurite.storage_options).put(str(small_simulation.parent), f"{container}/run", recursive=True)
    source = f"az://{container}/run/{small_simulation.name}"

    batch = reverse_launcher(double)
    cluster = AzureBatchDaskCluster(batch=batch.model_copy(update={"pool_id": "reduce"}), scheduler_host="127.0.0.1",
                                    maximum_workers=2)  # fmt: skip
    with no_direct_gateway(tmp_path / "gw") as gateway:
        state = visualize_simulation(
            source, title="Blob run", out_dir=str(tmp_path / "reduced"), cluster=cluster, launcher=batch,
            gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token), return_state=True,
        )  # fmt: skip
        assert state.is_completed(), state.message
        publication = state.result(_sync=True)  # playwright runs an event loop in this thread
        workers = [t for t in double.tasks.values() if t.job_id == "hpcviz-dask"]
        assert workers and all(t.state == "completed" for t in workers), "reduced on Batch workers, ended with the flow"
        assert [t.node[0] for t in workers] == ["reduce"] * len(workers)

        page = chromium_browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_content(f'<a id=open href="{html.escape(publication.link)}">Open 3D view</a>')
        page.click("#open")
        page.wait_for_function(VIEW_IMAGE_READY, timeout=180_000)
        deadline = time.monotonic() + 30
        while not is_rendered(png := page.locator("#hpcviz-view").screenshot()):
            assert time.monotonic() < deadline, "the view never showed a rendered image"
        (tmp_path / "batch-reverse-view.png").write_bytes(png)
        page.close()

        session = gateway.client().get(publication.viz_id)["session"]
        assert session["state"] == "ready" and gateway.parts.tunnels.port_of(session["id"]) == session["port"]
        batch_job, task_id = session["job_id"].split(":")
        assert batch_job == "hpcviz-viz" and double.tasks[(batch_job, task_id)].node[0] == "viz"
        assert stop_session(gateway, session["id"])["state"] == "stopped"
        assert double.tasks[(batch_job, task_id)].state == "completed"
