"""Dask workers as Azure Batch tasks, connecting to a scheduler this process starts.

dask-jobqueue's design on Batch: :class:`BatchWorkerJob` submits and stops
ONE worker (a Batch task running ``python -m distributed.cli.dask_worker``),
:class:`AzureBatchCluster` (a ``distributed.SpecCluster``) scales them, and
``cluster.adapt(maximum=N)`` makes it adaptive with a maximum::

    backend = AzureBatchBackend(account_url=..., pool_id="reduce-gpu", gpus=1)
    with AzureBatchCluster(backend, scheduler_host="10.0.0.4", nthreads=4, memory_limit="16GB") as cluster:
        cluster.adapt(minimum=0, maximum=8)
        with Client(cluster) as client:
            reduce_dataset(source, recipe, out, client=client)

A worker whose task ends while the cluster still wants it (the node was
preempted, the worker crashed) is noticed by its job's watcher and replaced by
a new task. Closing the cluster terminates every task; if this process dies
instead, the workers exit by themselves ``death_timeout_s`` after the
scheduler is gone, which completes their tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.scheduler import Scheduler

from prefect_hpcviz.viz.backends.azure_batch import AzureBatchBackend
from prefect_hpcviz.viz.backends.base import JobSpec

log = logging.getLogger(__name__)


class BatchWorkerJob(ProcessInterface):
    """One Dask worker as one Batch task (what dask-jobqueue calls a ``Job``).

    Example:
        >>> job = BatchWorkerJob("tcp://10.0.0.4:8786", name="w0", backend=backend, nthreads=2)
        >>> job.command()[:3]
        ['python3', '-m', 'distributed.cli.dask_worker']
    """

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        *,
        backend: AzureBatchBackend,
        nthreads: int = 1,
        memory_limit: str = "auto",
        death_timeout_s: float = 60.0,
        check_interval_s: float = 2.0,
    ) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler = scheduler
        self.key = name  # the cluster's key for this worker (SpecCluster uses ints)
        self.name = str(name)
        self.backend = backend
        self.nthreads = int(nthreads)
        self.memory_limit = str(memory_limit)
        self.death_timeout_s = float(death_timeout_s)
        self.check_interval_s = float(check_interval_s)
        self.job_id: str | None = None
        self._watcher: asyncio.Task | None = None
        self._closing = False

    def command(self) -> list[str]:
        """The worker's command line on the node."""
        return [
            self.backend.python, "-m", "distributed.cli.dask_worker", str(self.scheduler),
            "--name", self.name, "--nthreads", str(self.nthreads), "--memory-limit", self.memory_limit,
            "--death-timeout", str(int(self.death_timeout_s)), "--no-dashboard",
        ]  # fmt: skip

    async def start(self) -> None:
        """Submit the task (returns once Batch has it; the worker connects when it runs)."""
        self.job_id = await self.backend.submit(JobSpec(f"dask-{self.name}", self.command()))
        self._watcher = asyncio.ensure_future(self._watch())
        await super().start()

    async def close(self) -> None:
        """Terminate the task."""
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self.job_id is not None:
            await self.backend.stop(self.job_id)
        await super().close()

    async def _watch(self) -> None:
        """Replace this worker when its task ends while the cluster still wants it."""
        while not self._closing:
            await asyncio.sleep(self.check_interval_s)
            try:
                status = await self.backend.state(self.job_id)
            except Exception as exc:  # Batch unreachable for a moment: ask again later
                log.info("worker %s: no answer from Batch (%s)", self.name, exc)
                continue
            if status.state.ended and not self._closing:
                log.warning("Dask worker %s (Batch task %s) ended: %s; starting a new one", self.name, self.job_id, status.reason or status.state.value)
                self.status = Status.closed
                self._event_finished.set()
                cluster = getattr(self, "_cluster", lambda: None)()
                if cluster is not None and cluster.workers.get(self.key) is self:
                    del cluster.workers[self.key]
                    cluster._correct_state()
                return


class AzureBatchCluster(SpecCluster):
    """A Dask cluster whose workers are Azure Batch tasks (scale, adapt, replace, tear down).

    Args:
        backend: where the workers run (pool, credentials, python, setup): an
            AzureBatchBackend or its keyword arguments.
        n_workers: workers to start at once (or call ``scale`` / ``adapt`` later).
        scheduler_host: address of this machine that the Batch nodes reach.
        scheduler_port: 0 for any free port.
        nthreads, memory_limit, death_timeout_s: each worker's settings.
        asynchronous: for use inside an event loop (``await AzureBatchCluster(...)``).

    Example:
        >>> cluster = AzureBatchCluster(backend, scheduler_host="10.0.0.4")
        >>> cluster.adapt(minimum=0, maximum=4)
    """

    def __init__(
        self,
        backend: AzureBatchBackend | Mapping[str, Any],
        n_workers: int = 0,
        scheduler_host: str = "0.0.0.0",
        scheduler_port: int = 0,
        nthreads: int = 1,
        memory_limit: str = "auto",
        death_timeout_s: float = 60.0,
        check_interval_s: float = 2.0,
        asynchronous: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(backend, Mapping):  # settings (copyable, as prefect-dask's cluster_kwargs must be)
            backend = AzureBatchBackend(**backend)
        self.backend = backend
        scheduler = {"cls": Scheduler, "options": {"host": scheduler_host, "port": scheduler_port, "dashboard_address": ":0"}}
        worker = {
            "cls": BatchWorkerJob,
            "options": {"backend": backend, "nthreads": nthreads, "memory_limit": memory_limit,
                        "death_timeout_s": death_timeout_s, "check_interval_s": check_interval_s},
        }  # fmt: skip
        super().__init__(scheduler=scheduler, worker=worker, asynchronous=asynchronous, name="azure-batch", **kwargs)
        if n_workers:
            self.scale(n_workers)

    def job_ids(self) -> list[str]:
        """Batch ids (``job:task``) of the workers the cluster runs now."""
        return [w.job_id for w in self.workers.values() if isinstance(w, BatchWorkerJob) and w.job_id]


__all__ = ["AzureBatchCluster", "BatchWorkerJob"]
