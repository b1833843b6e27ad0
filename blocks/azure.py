"""Azure Batch blocks: viz servers as Batch tasks on an existing pool."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

if TYPE_CHECKING:
    from distributed import Client
    from prefect_dask import DaskTaskRunner

    from prefect_hpcviz.viz.backends.azure_batch import AzureBatchBackend

_SECRETS = {"account_key", "storage_account_key"}


class AzureBatchLauncher(Block):
    """Start viz servers as Azure Batch tasks in a job on an existing pool.

    Opening the link adds one task to the Batch job ``job_id`` on ``pool_id``;
    the waiting page says why it waits ("pool viz-gpu is allocating nodes (0
    of 2)"), then shows the view. Data given as ``az://CONTAINER/PATH`` is
    staged from Blob into the task; the task's stdout and stderr go to
    ``logs_container`` when it ends.

    Keys stay where they are: the gateway reads the Batch key from its own
    environment (``account_key_env``, default ``AZURE_BATCH_ACCOUNT_KEY``) or
    uses Entra ID (managed identity, ``az login``, ``AZURE_CLIENT_*``); a key
    saved in this block (``account_key``) is used only by :meth:`backend`
    and never sent to the gateway.

    Examples:
        A GPU pool, data in Blob read through the pool's managed identity:

        >>> AzureBatchLauncher(account_url="https://myviz.westeurope.batch.azure.com",
        ...                    pool_id="viz-gpu", vm_size="Standard_NC4as_T4_v3", gpus=1,
        ...                    storage_account_url="https://mydata.blob.core.windows.net",
        ...                    storage_identity="/subscriptions/.../userAssignedIdentities/viz",
        ...                    logs_container="viz-logs").save("viz-batch")

        A pool outside the gateway's virtual network: the server dials the gateway
        (its internal URL must be reachable from the nodes), no inbound port needed:

        >>> AzureBatchLauncher(account_url="https://myviz.westeurope.batch.azure.com",
        ...                    pool_id="viz-cpu", reverse=True).launcher_spec()["options"]["reverse"]
        True

        Try the task on your own machine first (see ``LocalDispatcher``):

        >>> AzureBatchLauncher.load("viz-batch").backend().task_specification(spec)
    """

    _block_type_name = "Azure Batch Launcher"
    _description = "Start visualization servers as Azure Batch tasks on an existing pool."
    _documentation_url = "https://github.com/prefect-hpcviz/prefect-hpcviz#azure-batch"

    account_url: str = Field(description="Batch account endpoint, https://ACCOUNT.REGION.batch.azure.com.")
    pool_id: str = Field(description="Existing pool the viz server tasks run on.")
    account_name: str | None = Field(default=None, description="Batch account name (read from account_url when empty).")
    auth: Literal["auto", "shared_key", "entra"] = Field(
        default="auto", description="auto: the shared key when there is one, else Entra ID."
    )
    account_key: SecretStr | None = Field(
        default=None, description="Shared key, for backend() in flows only; the gateway reads account_key_env."
    )
    account_key_env: str = Field(
        default="AZURE_BATCH_ACCOUNT_KEY", description="Environment variable holding the shared key on the gateway's machine."
    )
    job_id: str = Field(default="hpcviz-viz", description="Batch job holding the viz tasks (created when missing).")
    vm_size: str | None = Field(default=None, description="The pool's VM size, checked at the first launch.")
    gpus: int = Field(default=0, description="GPUs a viz server needs (the pool must be N-series).")
    python: str = Field(default="python3", description="Python on the nodes with prefect-hpcviz installed.")
    setup: list[str] = Field(default_factory=list, description='Shell lines run first, e.g. ["source /opt/hpcviz/bin/activate"].')
    serve_host: str = Field(default="0.0.0.0", description="Address the server listens on; 0.0.0.0 reports the node's IP.")
    walltime: str | None = Field(default="01:00:00", description="Batch ends the task after this long (HH:MM:SS).")
    storage_account_url: str | None = Field(
        default=None, description="Blob endpoint for az:// data and the logs, https://ACCOUNT.blob.core.windows.net."
    )
    storage_identity: str | None = Field(
        default=None, description="Resource id of the pool's managed identity that reads and writes Blob."
    )
    storage_account_key: SecretStr | None = Field(default=None, description="Storage key to read uploaded logs (backend() only).")
    storage_key_env: str = Field(default="AZURE_STORAGE_KEY", description="Environment variable with the storage key on the gateway.")
    logs_container: str | None = Field(default=None, description="Container the tasks' stdout/stderr are uploaded to.")
    reverse: bool = Field(
        default=False,
        description=(
            "The server dials the gateway instead of listening for it: for pools outside the gateway's "
            "virtual network or nodes that accept no inbound connections (the gateway's internal URL must "
            "be reachable from the nodes)."
        ),
    )

    def _options(self) -> dict[str, Any]:
        """The backend's settings: no keys, and no ``reverse`` (the gateway's, not the backend's)."""
        settings = set(type(self).model_fields) - {"block_type_slug", "reverse"} - _SECRETS
        options = self.model_dump(include=settings)
        return {k: v for k, v in options.items() if v not in (None, [])}

    def launcher_spec(self) -> dict[str, Any]:
        """What the gateway needs to start servers this way (no key in it).

        Example:
            >>> AzureBatchLauncher(account_url="https://a.westeurope.batch.azure.com", pool_id="p").launcher_spec()["kind"]
            'azure_batch'
        """
        from prefect_hpcviz.viz.backends import get_backend

        options = self._options()
        get_backend("azure_batch", options)  # a bad setting fails here, naming it
        if self.reverse:
            options["reverse"] = True
        return {"kind": "azure_batch", "options": options}

    def backend_options(self) -> dict[str, Any]:
        """The backend's keyword arguments, keys included (as SecretStr: they print as stars)."""
        return {**self._options(), "account_key": self.account_key, "storage_account_key": self.storage_account_key}

    def backend(self) -> AzureBatchBackend:
        """An :class:`~prefect_hpcviz.viz.backends.azure_batch.AzureBatchBackend` with these settings and keys."""
        from prefect_hpcviz.viz.backends.azure_batch import AzureBatchBackend

        return AzureBatchBackend(**self.backend_options())


class AzureBatchDaskCluster(Block):
    """Dask workers as Azure Batch tasks (GPU pools too), connecting to a scheduler the flow starts.

    The account, pool and credentials come from an :class:`AzureBatchLauncher`
    (``batch``); the workers go into their own Batch job (``job_id``). With
    ``maximum_workers`` the cluster is adaptive between ``minimum_workers``
    and it, otherwise it runs ``workers``. A worker whose task ends (node
    preempted, worker crashed) is replaced; leaving :meth:`get_client`
    terminates every task, and workers whose scheduler vanished (the flow's
    process was killed) exit by themselves after ``death_timeout_s``.

    Examples:
        >>> cluster = AzureBatchDaskCluster(batch=AzureBatchLauncher.load("viz-batch"),
        ...                                 scheduler_host="10.0.0.4", nthreads=4, maximum_workers=8)
        >>> with cluster.get_client() as client:
        ...     reduce_dataset(source, recipe, out, client=client)
        >>> @flow(task_runner=cluster.task_runner())
        ... def my_flow(): ...
    """

    _block_type_name = "Azure Batch Dask Cluster"
    _description = "Dask workers as Azure Batch tasks on an existing pool, for reductions."
    _documentation_url = "https://github.com/prefect-hpcviz/prefect-hpcviz#azure-batch"

    batch: AzureBatchLauncher = Field(description="Account, pool and credentials (an Azure Batch Launcher block).")
    job_id: str = Field(default="hpcviz-dask", description="Batch job holding the worker tasks (created when missing).")
    scheduler_host: str = Field(default="0.0.0.0", description="Address of the flow's machine that the Batch nodes reach.")
    nthreads: int = Field(default=1, description="Threads per worker.")
    memory_limit: str = Field(default="auto", description="Memory per worker, e.g. '16GB'.")
    death_timeout_s: float = Field(default=60.0, description="A worker exits this long after losing its scheduler.")
    workers: int = Field(default=1, description="Workers to start (when not adaptive).")
    minimum_workers: int = Field(default=0, description="Adaptive: fewest workers kept.")
    maximum_workers: int | None = Field(default=None, description="Adaptive scaling up to this many workers (empty: fixed size).")

    def cluster_kwargs(self) -> dict[str, Any]:
        """``AzureBatchCluster`` keyword arguments (the backend holds the keys)."""
        return {
            "backend": {**self.batch.backend_options(), "job_id": self.job_id, "walltime": None},
            "scheduler_host": self.scheduler_host,
            "nthreads": self.nthreads,
            "memory_limit": self.memory_limit,
            "death_timeout_s": self.death_timeout_s,
        }

    def adapt_kwargs(self) -> dict[str, int] | None:
        """``{"minimum", "maximum"}`` when adaptive, else None."""
        if self.maximum_workers is None:
            return None
        return {"minimum": self.minimum_workers, "maximum": self.maximum_workers}

    @contextlib.contextmanager
    def get_client(self) -> Iterator[Client]:
        """A dask.distributed Client of a new cluster; terminates its tasks on exit."""
        from distributed import Client

        from prefect_hpcviz.viz.backends.azure_batch_dask import AzureBatchCluster

        with AzureBatchCluster(**self.cluster_kwargs()) as cluster:
            adapt = self.adapt_kwargs()
            if adapt:
                cluster.adapt(**adapt)
            else:
                cluster.scale(self.workers)
            with Client(cluster) as client:
                yield client

    def task_runner(self) -> DaskTaskRunner:
        """A prefect-dask task runner on an AzureBatchCluster with the same settings."""
        from prefect_dask import DaskTaskRunner

        kwargs = self.cluster_kwargs()
        adapt = self.adapt_kwargs()
        if adapt is None:
            kwargs["n_workers"] = self.workers
        return DaskTaskRunner(
            cluster_class="prefect_hpcviz.viz.backends.azure_batch_dask.AzureBatchCluster",
            cluster_kwargs=kwargs,
            adapt_kwargs=adapt,
        )
