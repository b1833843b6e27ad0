"""Reduced data written back to Azure Blob (Azurite): the flow reads a dataset
from a container and copies the reduced result into it, manifest last, once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_hpcviz.blocks import LocalDaskCluster, VizGateway
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.reduce import ReducedDataset, read_layer
from prefect_hpcviz.viz.reduce.remote_copy import copy_reduced

pytestmark = pytest.mark.azurite

RECIPE = {"steps": [{"coarsen": {"factor": 2}}, {"contour": {"field": "pressure", "values": [0.5]}}]}


def local_files(reduced: ReducedDataset) -> dict[str, bytes]:
    return {p.relative_to(reduced.path).as_posix(): p.read_bytes() for p in reduced.path.rglob("*") if p.is_file()}


def blob_stamps(azurite, container: str, prefix: str) -> dict[str, tuple]:
    """Name below ``prefix`` -> (etag, last_modified), read through the Azure SDK (no adlfs listing cache)."""
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    return {b.name[len(prefix):]: (b.etag, b.last_modified) for b in client.list_blobs(name_starts_with=prefix)}


@pytest.fixture
def blob_source(azurite, small_simulation, monkeypatch):
    """The small simulation uploaded to a fresh container; the source read with the environment's credentials."""
    import fsspec

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    container = azurite.new_container("blobout")
    fsspec.filesystem("az", **azurite.storage_options).put(str(small_simulation.parent), f"{container}/run", recursive=True)
    return container, f"az://{container}/run/{small_simulation.name}"


def run_flow(source: str, out: Path, gateway, copy_to: str, azurite):
    from prefect_hpcviz.flows import visualize_simulation

    state = visualize_simulation(
        source, recipe=RECIPE, title="Blob output", out_dir=str(out),
        cluster=LocalDaskCluster(n_workers=1, processes=False),
        gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
        copy_to=copy_to, copy_storage_options=azurite.storage_options, return_state=True,
    )  # fmt: skip
    assert state.is_completed(), state.message
    return state


async def _summary_table(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return str(next(a.data for a in artifacts if a.key == "hpcviz-blob-output-summary"))


def test_flow_reads_from_a_container_and_writes_the_reduced_result_back_once(
    prefect_harness, gateway, azurite, blob_source, tmp_path
):
    import fsspec

    container, source = blob_source
    state = run_flow(source, tmp_path / "reduced", gateway, f"az://{container}/reduced", azurite)
    reduced = ReducedDataset.load(state.result().data)
    remote = f"az://{container}/reduced/{reduced.key}/"

    # Every local file is in the container, byte for byte, manifest included.
    fs = fsspec.filesystem("az", **azurite.storage_options)
    local = local_files(reduced)
    prefix = f"reduced/{reduced.key}/"
    stamps = blob_stamps(azurite, container, prefix)
    assert set(stamps) == set(local) and "manifest.json" in stamps
    assert {name: fs.cat_file(f"{container}/{prefix}{name}") for name in local} == local

    # The copy reads back as the same reduced dataset.
    fs.get(f"{container}/{prefix}", str(tmp_path / "download"), recursive=True)
    copy = ReducedDataset.load(tmp_path / "download")
    assert copy.key == reduced.key and copy.time_values == reduced.time_values
    layer = reduced.layers[0].name
    original, downloaded = read_layer(reduced.layer(layer).files[-1]), read_layer(copy.layer(layer).files[-1])
    assert downloaded.n_points == original.n_points > 0 and downloaded.n_cells == original.n_cells

    # The summary table says where the copy is.
    from prefect_hpcviz.cli.services import flush_prefect_logs_and_events

    flush_prefect_logs_and_events()
    import asyncio

    assert remote in asyncio.run(_summary_table(state.state_details.flow_run_id))

    # A second run finds the complete copy and rewrites no blob.
    again = run_flow(source, tmp_path / "reduced", gateway, f"az://{container}/reduced", azurite)
    assert ReducedDataset.load(again.result().data).key == reduced.key
    assert blob_stamps(azurite, container, prefix) == stamps


def test_an_interrupted_copy_is_not_complete_and_the_next_copy_finishes_it(azurite, small_reduced):
    import fsspec

    fs = fsspec.filesystem("az", **azurite.storage_options)
    container = azurite.new_container("torn")
    prefix = f"{container}/reduced/{small_reduced.key}"
    local = local_files(small_reduced)
    # What a copy killed half-way leaves: some files, one of them torn, and no manifest.
    torn = sorted(name for name in local if name != "manifest.json")
    fs.pipe(f"{prefix}/{torn[0]}", local[torn[0]][:10])
    fs.pipe(f"{prefix}/{torn[1]}", local[torn[1]])
    assert not fs.exists(f"{prefix}/manifest.json"), "no manifest: a reader must not take this copy as complete"

    url = copy_reduced(small_reduced, f"az://{container}/reduced", azurite.storage_options)

    assert url == f"az://{prefix}/"
    fs.invalidate_cache()
    assert {name: fs.cat_file(f"{prefix}/{name}") for name in local} == local
    assert json.loads(fs.cat_file(f"{prefix}/manifest.json"))["key"] == small_reduced.key


def test_wrong_credentials_name_the_url_and_what_to_do(azurite, small_reduced):
    container = azurite.new_container("creds")
    url = f"az://{container}/reduced"
    wrong = azurite.connection_string.replace(azurite.account_key, "d3Jvbmcga2V5" * 7 + "AA==")
    with pytest.raises(InputError, match="credentials") as error:
        copy_reduced(small_reduced, url, {"connection_string": wrong})
    assert error.value.input == url


def test_a_url_fsspec_cannot_write_is_an_input_error(small_reduced):
    with pytest.raises(InputError, match="nosuchprotocol://bucket/reduced"):
        copy_reduced(small_reduced, "nosuchprotocol://bucket/reduced")
    with pytest.raises(InputError, match="not a storage URL"):
        copy_reduced(small_reduced, "relative/folder")
