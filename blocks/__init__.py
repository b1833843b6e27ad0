"""Prefect blocks: configuration saved once (in the UI or in code) that builds
Dask clusters, viz-server launchers and gateway clients.

Blocks hold settings, never algorithms: each one hands its settings to the
engine in :mod:`prefect_hpcviz.viz`. They are registered with Prefect through
the ``prefect.collections`` entry point, so ``prefect block register -m
prefect_hpcviz.blocks`` is not needed once the package is installed.
"""

from prefect_hpcviz.blocks.azure import AzureBatchDaskCluster, AzureBatchLauncher
from prefect_hpcviz.blocks.clusters import LocalDaskCluster, SlurmDaskCluster
from prefect_hpcviz.blocks.gateway import VizGateway
from prefect_hpcviz.blocks.launchers import LocalLauncher, SlurmLauncher

__all__ = ["AzureBatchDaskCluster", "AzureBatchLauncher", "LocalDaskCluster", "LocalLauncher", "SlurmDaskCluster", "SlurmLauncher", "VizGateway"]
