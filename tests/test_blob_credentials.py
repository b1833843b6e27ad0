"""Azure Blob credentials from prefect-azure's AzureBlobStorageCredentials block.

End to end on Azurite with a block saved in the test harness's Prefect API:
the flow reads the dataset from a container with the block and writes the
reduced result back with ``copy_to``, and the account key is in none of the
flow run's parameters, logs or artifacts (read back from the API).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from prefect_azure import AzureBlobStorageCredentials  # the azure extra (scripts/setup.sh installs it)

from prefect_hpcviz.blocks import LocalDaskCluster, VizGateway
from prefect_hpcviz.blocks.blob_credentials import account_url_options, blob_storage_options
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.reduce import ReducedDataset


RECIPE = {"steps": [{"coarsen": {"factor": 2}}]}
AZURE_ENV = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
             "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CLIENT_ID")


@pytest.fixture
def no_env_credentials(monkeypatch):
    """No Azure credentials in the environment: whatever reads Blob must use the block."""
    for name in AZURE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def saved_block(prefect_harness, azurite) -> str:
    """An AzureBlobStorageCredentials block for Azurite saved in the Prefect API, by name."""
    AzureBlobStorageCredentials(connection_string=azurite.connection_string).save("azurite-runs", overwrite=True)
    return "azurite-runs"


@pytest.fixture(scope="module")
def blob_run(azurite, small_simulation) -> tuple[str, str]:
    """The small simulation in a fresh container: (container, URL of its .pvd)."""
    import fsspec

    container = azurite.new_container("creds")
    fsspec.filesystem("az", **azurite.storage_options).put(str(small_simulation.parent), f"{container}/run",
                                                           recursive=True)
    return container, f"az://{container}/run/{small_simulation.name}"


def assert_no_key_in_the_run(azurite, flow_run_id) -> tuple[dict, list[str], list[str]]:
    """Read the run back from the Prefect API: its parameters, logs and artifacts hold no account key."""
    from prefect_hpcviz.cli.services import flush_prefect_logs_and_events

    flush_prefect_logs_and_events()
    parameters, logs, artifacts = asyncio.run(_run_record(flow_run_id))
    assert logs and artifacts, "there is something to check"
    recorded = json.dumps(parameters) + "\n".join(logs) + "\n".join(artifacts)
    assert azurite.account_key not in recorded and azurite.account_key[:20] not in recorded
    return parameters, logs, artifacts


async def _run_record(flow_run_id) -> tuple[dict, list[str], list[str]]:
    """The flow run's parameters, log messages and artifact texts, as the Prefect API returns them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return run.parameters, [log.message for log in logs], [f"{a.data} {a.description}" for a in artifacts]


@pytest.mark.azurite
def test_flow_reads_and_writes_blob_with_a_saved_block_and_no_key_is_in_the_run(
    azurite, saved_block, blob_run, gateway, no_env_credentials, tmp_path
):
    import fsspec

    from prefect_hpcviz.flows import visualize_simulation

    fs = fsspec.filesystem("az", **azurite.storage_options)
    container, source = blob_run
    runs = []
    for credentials in (saved_block, AzureBlobStorageCredentials.load(saved_block)):  # a name, then the block
        state = visualize_simulation(
            source, recipe=RECIPE, title="Blob with a block", out_dir=str(tmp_path / "reduced"),
            cluster=LocalDaskCluster(n_workers=1, processes=False),
            gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
            copy_to=f"az://{container}/reduced", storage_credentials=credentials, return_state=True,
        )  # fmt: skip
        assert state.is_completed(), state.message
        runs.append(state)

    # The reduced result is in the container, complete (manifest last) and the same as the local one.
    reduced = ReducedDataset.load(runs[0].result().data)
    remote_url = f"az://{container}/reduced/{reduced.key}/"
    manifest = json.loads(fs.cat_file(f"{container}/reduced/{reduced.key}/manifest.json"))
    assert manifest["key"] == reduced.key and manifest["source"] == source
    assert fs.cat_file(f"{container}/reduced/{reduced.key}/{reduced.volume_files[0].name}") == \
        reduced.volume_files[0].read_bytes()

    # Neither run's parameters, logs nor artifacts hold the key; what was stored is the name or a masked block.
    for state, stored in zip(runs, (saved_block, "**********")):
        parameters, logs, artifacts = assert_no_key_in_the_run(azurite, state.state_details.flow_run_id)
        assert stored in json.dumps(parameters["storage_credentials"])
        assert any(source in message for message in logs), "the run logged its reads"
        assert any(remote_url in text for text in artifacts), "the summary table names the copy"


@pytest.mark.azurite
def test_canned_regeneration_and_the_data_browser_read_blob_with_the_block(
    azurite, saved_block, blob_run, gateway, no_env_credentials, tmp_path
):
    from prefect_hpcviz.flows import browse_datasets, regenerate_canned

    container, source = blob_run
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"visualizations:\n  - name: Blob run\n    source: {source}\n"
                       "    recipe: {steps: [{coarsen: {factor: 2}}]}\n    thumbnails: [[64, 48]]\n")
    viz_gateway = VizGateway(url=gateway.url, admin_token=gateway.admin_token)
    canned = regenerate_canned(str(catalog), out_dir=str(tmp_path / "canned"), gateway=viz_gateway,
                               cluster=LocalDaskCluster(n_workers=1, processes=False),
                               storage_credentials=saved_block, return_state=True)
    assert canned.is_completed(), canned.message
    assert [(e.name, e.status) for e in canned.result().entries] == [("Blob run", "reduced")]
    assert_no_key_in_the_run(azurite, canned.state_details.flow_run_id)

    browsed = browse_datasets(f"az://{container}/run", gateway=viz_gateway, storage_credentials=saved_block,
                              return_state=True)
    assert browsed.is_completed(), browsed.message
    assert [(d.url, d.error) for d in browsed.result()] == [(source, "")]
    assert_no_key_in_the_run(azurite, browsed.state_details.flow_run_id)


@pytest.mark.azurite
def test_a_block_name_that_is_not_saved_fails_the_run_naming_it_and_what_to_do(
    prefect_harness, azurite, no_env_credentials
):
    from prefect_hpcviz.flows import visualize_simulation

    state = visualize_simulation(f"az://{azurite.new_container('nameless')}/run/simulation.pvd",
                                 storage_credentials="no-such-blob-block", return_state=True)
    assert state.is_failed()
    with pytest.raises(InputError) as error:
        state.result()
    assert error.value.input == "no-such-blob-block"
    assert "no AzureBlobStorageCredentials block is saved under this name" in error.value.problem
    assert ".save('NAME')" in error.value.fix and "Prefect UI" in error.value.fix


def test_a_connection_string_block_becomes_the_connection_string():
    connection_string = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;"
    block = AzureBlobStorageCredentials(connection_string=connection_string)
    assert blob_storage_options(block) == {"connection_string": connection_string}
    assert blob_storage_options(None) == {}


def test_an_account_url_block_uses_the_service_principal_or_default_azure_credential():
    principal = AzureBlobStorageCredentials(account_url="https://mydata.blob.core.windows.net/",
                                            client_id="app", tenant_id="tenant", client_secret="s3cret")
    assert blob_storage_options(principal) == {
        "account_name": "mydata", "account_host": "mydata.blob.core.windows.net",
        "client_id": "app", "tenant_id": "tenant", "client_secret": "s3cret",
    }  # fmt: skip
    default = AzureBlobStorageCredentials(account_url="https://mydata.blob.core.usgovcloudapi.net")
    assert blob_storage_options(default) == {
        "account_name": "mydata", "account_host": "mydata.blob.core.usgovcloudapi.net", "anon": False,
    }  # fmt: skip
    with_sas = AzureBlobStorageCredentials(account_url="https://mydata.blob.core.windows.net?sv=2024&sig=abc")
    assert blob_storage_options(with_sas)["sas_token"] == "sv=2024&sig=abc"
    assert "anon" not in blob_storage_options(with_sas)


def test_an_account_url_adlfs_cannot_reach_is_an_input_error_saying_what_to_use():
    with pytest.raises(InputError, match="connection string") as error:
        account_url_options("http://127.0.0.1:10000/devstoreaccount1", "block 'emulator'")
    assert error.value.input == "block 'emulator'"
    with pytest.raises(InputError, match="http://127.0.0.1:10000/devstoreaccount1[?]SAS") as error:
        account_url_options("http://127.0.0.1:10000/devstoreaccount1?sv=2024&sig=s3cret")
    assert "s3cret" not in str(error.value)
    with pytest.raises(InputError, match="not an AzureBlobStorageCredentials block or a saved block's name"):
        blob_storage_options(42)
