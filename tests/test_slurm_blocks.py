"""The Slurm blocks are saved once, loaded by name, and hand the gateway and Dask what they need."""

from __future__ import annotations

import pytest

from prefect_hpcviz.blocks import SlurmDaskCluster, SlurmLauncher
from prefect_hpcviz.viz.gateway.launch import normalize_launcher
from prefect_hpcviz.viz.errors import InputError


def test_slurm_blocks_round_trip_through_the_prefect_api(prefect_harness):
    SlurmLauncher(partition="viz", walltime="02:00:00", memory="8G", gpus=1, setup=["module load mesa"],
                  command_nodes=["login1", "login2"], workdir="/home/me/jobs").save("test-slurm-launcher", overwrite=True)
    SlurmDaskCluster(partition="compute", cores=8, memory="32GB", maximum_jobs=10).save("test-slurm-cluster", overwrite=True)

    spec = SlurmLauncher.load("test-slurm-launcher").launcher_spec()
    assert spec["kind"] == "slurm"
    assert spec["options"]["command_nodes"] == ["login1", "login2"] and spec["options"]["setup"] == ["module load mesa"]
    assert normalize_launcher(spec, {})["options"]["gpus"] == 1  # the gateway accepts it as sent
    cluster = SlurmDaskCluster.load("test-slurm-cluster")
    assert cluster.adapt_kwargs() == {"minimum_jobs": 0, "maximum_jobs": 10}
    assert cluster.cluster_kwargs() == {"queue": "compute", "cores": 8, "memory": "32GB"}


def test_a_launcher_the_gateway_cannot_use_is_refused_at_registration_naming_the_setting():
    with pytest.raises(InputError, match="walltime"):
        normalize_launcher(SlurmLauncher(walltime="soon").launcher_spec(), {})
    with pytest.raises(InputError, match="workdir"):
        normalize_launcher(SlurmLauncher(command_nodes=["login1"]).launcher_spec(), {})
