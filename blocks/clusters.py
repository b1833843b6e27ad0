"""Cluster blocks: where the reduction's Dask graph runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field

if TYPE_CHECKING:
    from distributed import Client
    from prefect_dask import DaskTaskRunner


class LocalDaskCluster(Block):
    """A dask.distributed LocalCluster on this machine, or a running scheduler.

    The cluster is started lazily, when a client is asked for, and torn down
    when the client's context ends; a scheduler given by ``address`` is
    connected to and never owned.

    Examples:
        Reduce on two worker processes:

        >>> cluster = LocalDaskCluster(n_workers=2)
        >>> with cluster.get_client() as client:
        ...     client.submit(sum, [1, 2]).result()
        3

        Run a flow's tasks on the same kind of cluster:

        >>> @flow(task_runner=LocalDaskCluster(n_workers=2).task_runner())
        ... def my_flow(): ...
    """

    _block_type_name = "Local Dask Cluster"
    _description = "A Dask LocalCluster on this machine (or an existing scheduler) for reductions."
    _documentation_url = "https://github.com/prefect-hpcviz/prefect-hpcviz#blocks"

    n_workers: int | None = Field(
        default=None, description="Worker processes; Dask's default (one per core) when empty."
    )
    threads_per_worker: int | None = Field(default=None, description="Threads in each worker.")
    memory_limit: str = Field(default="auto", description="Memory per worker, e.g. '4GiB'.")
    processes: bool = Field(default=True, description="Workers as processes (False: threads).")
    address: str | None = Field(
        default=None,
        description="Connect to this running scheduler (tcp://host:8786) instead of starting one.",
    )

    def _cluster_kwargs(self) -> dict:
        kwargs = {
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
            "processes": self.processes,
            "dashboard_address": ":0",
        }
        return {k: v for k, v in kwargs.items() if v is not None}

    @contextlib.contextmanager
    def get_client(self) -> Iterator[Client]:
        """A dask.distributed Client for this cluster; closes what it started."""
        from distributed import Client, LocalCluster

        if self.address:
            with Client(self.address) as client:
                yield client
            return
        with LocalCluster(**self._cluster_kwargs()) as cluster, Client(cluster) as client:
            yield client

    def task_runner(self) -> DaskTaskRunner:
        """A prefect-dask task runner for the same kind of cluster."""
        from prefect_dask import DaskTaskRunner

        if self.address:
            return DaskTaskRunner(address=self.address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster", cluster_kwargs=self._cluster_kwargs()
        )
