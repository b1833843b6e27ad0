"""Cluster blocks: where the reduction's Dask graph runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import Field

from prefect_hpcviz.viz.errors import InputError

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


class SlurmDaskCluster(Block):
    """Dask workers as Slurm jobs (dask-jobqueue's SLURMCluster), from saved settings.

    A setting left empty falls back to the site's ``jobqueue.yaml``
    (``jobqueue.slurm.*`` in Dask's configuration), as in dask-jobqueue; a
    site that configured that file needs no settings here at all. With
    ``maximum_jobs`` the cluster scales adaptively between ``minimum_jobs``
    and it; otherwise it starts ``jobs`` jobs.

    Examples:
        Reduce on two worker jobs:

        >>> cluster = SlurmDaskCluster(partition="compute", cores=4, memory="8GB", jobs=2,
        ...                            job_script_prologue=["module load python"])
        >>> with cluster.get_client() as client:
        ...     client.submit(sum, [1, 2]).result()
        3

        Adaptive, at most ten jobs, for a flow's tasks:

        >>> @flow(task_runner=SlurmDaskCluster(cores=8, memory="32GB", maximum_jobs=10).task_runner())
        ... def my_flow(): ...
    """

    _block_type_name = "Slurm Dask Cluster"
    _description = "Dask workers as Slurm batch jobs (dask-jobqueue SLURMCluster) for reductions."
    _documentation_url = "https://github.com/prefect-hpcviz/prefect-hpcviz#slurm"

    partition: str | None = Field(default=None, description="Partition (sbatch -p); jobqueue.yaml's queue when empty.")
    account: str | None = Field(default=None, description="Account to charge.")
    cores: int | None = Field(default=None, description="Cores per job.")
    memory: str | None = Field(default=None, description="Memory per job, e.g. '8GB'.")
    processes: int | None = Field(default=None, description="Worker processes per job (cores are shared among them).")
    walltime: str | None = Field(default=None, description="Time limit per job, e.g. '01:00:00'.")
    gpus: int = Field(default=0, description="GPUs per job (--gres=gpu:N).")
    job_extra_directives: list[str] = Field(default_factory=list, description='More sbatch options, e.g. ["--qos=low"].')
    job_script_prologue: list[str] = Field(
        default_factory=list, description='Lines run before the worker starts, e.g. ["module load python"].'
    )
    interface: str | None = Field(default=None, description="Network interface for workers and scheduler, e.g. 'ib0'.")
    python: str | None = Field(default=None, description="Python on the compute nodes (this one when empty).")
    log_directory: str | None = Field(default=None, description="Folder for the worker jobs' output.")
    jobs: int = Field(default=1, description="Jobs to start (when not adaptive).")
    minimum_jobs: int = Field(default=0, description="Adaptive: fewest jobs kept.")
    maximum_jobs: int | None = Field(default=None, description="Adaptive scaling up to this many jobs (empty: fixed size).")

    def cluster_kwargs(self) -> dict[str, Any]:
        """SLURMCluster keyword arguments: only what is set here (the rest comes from jobqueue.yaml).

        Example:
            >>> SlurmDaskCluster(partition="debug", cores=2, memory="2GB", gpus=1).cluster_kwargs()["job_extra_directives"]
            ['--gres=gpu:1']
        """
        directives = list(self.job_extra_directives)
        if self.gpus:
            directives.append(f"--gres=gpu:{self.gpus}")
        kwargs = {
            "queue": self.partition,
            "account": self.account,
            "cores": self.cores,
            "memory": self.memory,
            "processes": self.processes,
            "walltime": self.walltime,
            "job_extra_directives": directives or None,
            "job_script_prologue": list(self.job_script_prologue) or None,
            "interface": self.interface,
            "python": self.python,
            "log_directory": self.log_directory,
        }
        return {k: v for k, v in kwargs.items() if v is not None}

    def adapt_kwargs(self) -> dict[str, int] | None:
        """``{"minimum_jobs", "maximum_jobs"}`` when adaptive, else None."""
        if self.maximum_jobs is None:
            return None
        return {"minimum_jobs": self.minimum_jobs, "maximum_jobs": self.maximum_jobs}

    def make_cluster(self) -> Any:
        """A started SLURMCluster (not yet scaled); InputError naming what is missing."""
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise InputError(
                "SlurmDaskCluster", "needs dask-jobqueue", "pip install 'prefect-hpcviz[slurm]'"
            ) from exc
        try:
            return SLURMCluster(**self.cluster_kwargs())
        except ValueError as exc:  # dask-jobqueue: "You must specify how much cores/memory ..."
            raise InputError(
                "SlurmDaskCluster",
                str(exc),
                "set cores and memory on the block, or jobqueue.slurm.cores/memory in jobqueue.yaml",
            ) from exc

    @contextlib.contextmanager
    def get_client(self) -> Iterator[Client]:
        """A dask.distributed Client of a new SLURMCluster; cancels its jobs on exit."""
        from distributed import Client

        with self.make_cluster() as cluster:
            adapt = self.adapt_kwargs()
            if adapt:
                cluster.adapt(**adapt)
            else:
                cluster.scale(jobs=self.jobs)
            with Client(cluster) as client:
                yield client

    def task_runner(self) -> DaskTaskRunner:
        """A prefect-dask task runner on a SLURMCluster with the same settings."""
        from prefect_dask import DaskTaskRunner

        kwargs = self.cluster_kwargs()
        adapt = self.adapt_kwargs()
        if adapt is None:  # SLURMCluster(n_workers=N) starts N workers' worth of jobs
            kwargs["n_workers"] = self.jobs * (self.processes or 1)
        return DaskTaskRunner(
            cluster_class="dask_jobqueue.SLURMCluster", cluster_kwargs=kwargs, adapt_kwargs=adapt
        )
