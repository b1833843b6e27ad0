"""Blocks are saved once and loaded by name, and keep secrets secret."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block

from prefect_hpcviz.blocks import LocalDaskCluster, LocalLauncher, VizGateway
from prefect_hpcviz.viz.errors import InputError


def test_blocks_round_trip_through_the_prefect_api(prefect_harness):
    LocalDaskCluster(n_workers=2, threads_per_worker=1).save("test-cluster", overwrite=True)
    LocalLauncher(command=["{python}", "-m", "mysite.serve", "--data", "{data}"]).save("test-launcher", overwrite=True)
    VizGateway(url="http://gateway.example:8765", admin_token="s3cret").save("test-gateway", overwrite=True)

    assert LocalDaskCluster.load("test-cluster").n_workers == 2
    assert LocalLauncher.load("test-launcher").launcher_spec() == {
        "kind": "local",
        "options": {"command": ["{python}", "-m", "mysite.serve", "--data", "{data}"]},
    }
    gateway = VizGateway.load("test-gateway")
    assert gateway.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(gateway)


def test_blocks_are_found_through_the_prefect_collections_entry_point():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="prefect.collections") if e.name == "prefect_hpcviz"]
    module = entry.load()
    assert {LocalDaskCluster, LocalLauncher, VizGateway} <= {
        obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, Block)
    }


def test_a_cluster_block_gives_a_working_dask_client():
    with LocalDaskCluster(n_workers=1, processes=False).get_client() as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6


def test_a_gateway_block_from_an_empty_environment_says_what_to_do(monkeypatch):
    monkeypatch.delenv("HPCVIZ_GATEWAY_URL", raising=False)
    monkeypatch.delenv("HPCVIZ_GATEWAY_TOKEN", raising=False)
    with pytest.raises(InputError, match="VizGateway"):
        VizGateway.from_env()
