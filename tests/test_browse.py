"""The dataset browser: list what a folder or an Azure container holds, as Prefect
artifacts with "visualize" links that launch a viewer on click (real Prefect API,
real gateway and viz server, Azurite for az://)."""

from __future__ import annotations

import json
import os
import re

import httpx
import numpy as np
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from prefect_hpcviz.blocks import VizGateway
from prefect_hpcviz.flows import browse_datasets
from prefect_hpcviz.viz.browse import list_datasets
from prefect_hpcviz.viz.datasets import write_synthetic
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayConfig
from prefect_hpcviz.viz.reduce import is_reduced_dir


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browse")
    write_synthetic(folder / "run1", shape=(20, 20, 20), steps=3)
    volume = np.random.default_rng(1).random((2, 6, 7, 8), dtype=np.float32)
    xr.Dataset({"salinity": (("time", "z", "y", "x"), volume)}, coords={"time": [0.0, 1.0]}).to_netcdf(folder / "ocean.nc")
    (folder / "notes.txt").write_text("not a dataset")
    (folder / "broken.vti").write_text("not VTK either")
    return folder


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with EmbeddedGateway(GatewayConfig(host="127.0.0.1", port=0, state_dir=tmp_path_factory.mktemp("gateway"))) as running:
        yield running


async def _artifacts(flow_run_id) -> dict:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def _rows(data):
    return json.loads(data) if isinstance(data, str) else data


def test_a_folder_lists_each_dataset_once_with_format_size_steps_and_time(data_folder):
    listed = {d.name: d for d in list_datasets(data_folder)}

    assert set(listed) == {"broken.vti", "ocean.nc", "run1/simulation.pvd"}, "series pieces and other files are not datasets"
    series = listed["run1/simulation.pvd"]
    assert (series.format, series.time_steps) == ("pvd", 3)
    assert series.nbytes == sum(p.stat().st_size for p in (data_folder / "run1").glob("simulation*"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", series.modified)
    assert (listed["ocean.nc"].format, listed["ocean.nc"].time_steps) == ("netcdf", 2)
    assert listed["broken.vti"].error and not listed["broken.vti"].readable


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="nowhere: no such file or directory"):
        list_datasets(tmp_path / "nowhere")


async def test_browsing_a_folder_publishes_a_table_and_visualize_links_that_launch_on_click(
    prefect_harness, gateway, data_folder
):
    state = browse_datasets(
        str(data_folder), gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token), return_state=True
    )
    assert state.is_completed(), state.message
    by_key = await _artifacts(state.state_details.flow_run_id)
    tables = [a for a in by_key.values() if a.type == "table"]
    assert len(tables) == 1 and tables[0].key.startswith("hpcviz-datasets-")
    rows = {row["dataset"]: row for row in _rows(tables[0].data)}
    assert rows["run1/simulation.pvd"]["format"] == "pvd" and rows["run1/simulation.pvd"]["time steps"] == 3
    assert rows["ocean.nc"]["time steps"] == 2 and rows["ocean.nc"]["modified"]

    markdown = by_key[tables[0].key + "-links"].data
    links = dict(re.findall(r"\| ([^|]+?) \| [^\n]*\[visualize\]\(([^)]+)\) \|", markdown))
    assert set(links) == {"ocean.nc", "run1/simulation.pvd"}
    assert "broken.vti" in markdown and "cannot be opened" in markdown

    link = links["run1/simulation.pvd"]
    viz_id = link.split("/v/", 1)[1].split("?", 1)[0]
    with httpx.Client(trust_env=False, timeout=120) as browser:
        assert browser.get(link, follow_redirects=False).status_code == 303  # the click: token -> cookie
        page = browser.get(f"{gateway.url}/s/{viz_id}/", headers={"Accept": "text/html"})  # launches the viewer
    assert page.status_code == 200
    with gateway.client() as client:
        session = client.wait_ready(viz_id, timeout=120, launch=False)
        registered = client.get(viz_id)
    assert registered["app"] == "first-look" and registered["data"] == str(data_folder / "run1" / "simulation.pvd")
    assert session["state"] == "ready"
    home_reduced = os.path.join(os.environ["HPCVIZ_HOME"], "reduced")
    assert any(is_reduced_dir(os.path.join(home_reduced, d)) for d in os.listdir(home_reduced)), \
        "the viewer reduced the dataset with the default recipe"


@pytest.mark.azurite
async def test_browsing_an_azure_container_lists_and_visualizes_its_datasets(
    prefect_harness, azurite, data_folder, tmp_path_factory, monkeypatch
):
    import fsspec

    container = azurite.new_container("browse")
    fs = fsspec.filesystem("az", **azurite.storage_options)
    fs.put(str(data_folder / "run1"), f"{container}/runs/run1", recursive=True)
    fs.put(str(data_folder / "ocean.nc"), f"{container}/ocean.nc")

    listed = {d.name: d for d in list_datasets(f"az://{container}", storage_options=azurite.storage_options)}
    assert set(listed) == {"ocean.nc", "runs/run1/simulation.pvd"}
    series = listed["runs/run1/simulation.pvd"]
    assert series.url == f"az://{container}/runs/run1/simulation.pvd"
    assert (series.format, series.time_steps) == ("pvd", 3) and series.modified.endswith("Z")
    assert series.nbytes == sum(p.stat().st_size for p in (data_folder / "run1").glob("simulation*"))

    # The viz server a link starts reads the container with the environment's credentials.
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    state_dir = tmp_path_factory.mktemp("az-gateway")
    with EmbeddedGateway(GatewayConfig(host="127.0.0.1", port=0, state_dir=state_dir)) as gw:
        state = browse_datasets(
            f"az://{container}", storage_options=azurite.storage_options,
            gateway=VizGateway(url=gw.url, admin_token=gw.admin_token), return_state=True,
        )
        assert state.is_completed(), state.message
        by_key = await _artifacts(state.state_details.flow_run_id)
        markdown = next(a.data for a in by_key.values() if a.key.endswith("-links"))
        links = dict(re.findall(r"\| ([^|]+?) \| [^\n]*\[visualize\]\(([^)]+)\) \|", markdown))
        assert set(links) == {"ocean.nc", "runs/run1/simulation.pvd"}
        viz_id = links["runs/run1/simulation.pvd"].split("/v/", 1)[1].split("?", 1)[0]
        with gw.client() as client:
            session = client.wait_ready(viz_id, timeout=180)
        assert session["state"] == "ready", "the viewer reduced the blob data with the default recipe and serves it"
