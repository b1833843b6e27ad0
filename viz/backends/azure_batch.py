"""Run viz server jobs as Azure Batch tasks in a job on an existing pool (azure-batch SDK).

::

    backend = AzureBatchBackend(account_url="https://myviz.westeurope.batch.azure.com",
                                account_name="myviz", pool_id="viz-gpu", vm_size="Standard_NC4as_T4_v3",
                                gpus=1, storage_account_url="https://mydata.blob.core.windows.net",
                                storage_identity="/subscriptions/.../userAssignedIdentities/viz",
                                logs_container="viz-logs")
    job_id = await backend.submit(spec)       # a task in Batch job "hpcviz-viz" -> "hpcviz-viz:<task>"
    await backend.state(job_id)               # JobStatus(QUEUED, reason="pool viz-gpu has no nodes ...")
    await backend.logs(job_id)                # stdout.txt from the node, or from Blob once uploaded
    await backend.stop(job_id)                # terminate the task

What a task is made of (a :class:`~prefect_hpcviz.viz.backends.batch_tasks.TaskSpecification`,
see :meth:`AzureBatchBackend.task_specification`):

- the command: ``/bin/bash -c "exec 2>&1; SETUP...; exec PYTHON -m prefect_hpcviz.viz.serve ..."``
  (stderr joins stdout, so ``stdout.txt`` is the whole log in order);
- data given as ``az://CONTAINER/PATH`` with ``storage_account_url`` set is staged from
  Blob into the task's folder as resource files (a folder as it is; a file with its
  siblings, so that a ``.pvd`` finds its pieces), read through ``storage_identity``
  (the pool's user-assigned managed identity) or a SAS in ``storage_account_url``;
- with ``logs_container``, ``stdout.txt`` and ``stderr.txt`` are uploaded to
  ``CONTAINER/<batch job>/<task>/`` when the task ends, so the log outlives the node;
- the session key travels in the task's environment settings: never on the command
  line, but readable by whoever may read the Batch account's tasks.

Credentials: a shared key (``account_key``, or the environment variable named by
``account_key_env``) or Entra ID (azure-identity ``DefaultAzureCredential``); see
:mod:`~prefect_hpcviz.viz.backends.azure_auth`. Keys never appear in a repr, a log or an error.

State: ``active`` -> queued (why: the pool has no nodes, is allocating, or all slots are
busy), ``preparing`` -> starting, ``running`` -> running on the node's address (failed
when the node became unusable), ``completed`` -> done or failed with Batch's failure
information (exit code, a resource file that could not be downloaded, ...).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shlex
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from prefect_hpcviz.viz.backends.azure_auth import Secret, batch_credential, check_auth
from prefect_hpcviz.viz.backends.base import JobSpec, JobState, JobStatus
from prefect_hpcviz.viz.backends.batch_tasks import InputFile, OutputFile, TaskSpecification
from prefect_hpcviz.viz.errors import InputError, LaunchError

log = logging.getLogger(__name__)

_SERVE_MODULE = "prefect_hpcviz.viz.serve"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d\d):(\d\d)$")
_ACCOUNT_HOST = re.compile(r"^([a-z0-9]+)\.[a-z0-9-]+\.batch\.azure\.com$")
_GPU_VM = re.compile(r"^standard_n", re.IGNORECASE)
GATEWAY_ID_SETTING = "HPCVIZ_GATEWAY_ID"
"""Environment setting that tags a task with the gateway that added it."""
BAD_NODE_STATES = {"unusable", "starttaskfailed", "offline", "preempted", "leavingpool", "deallocated", "deallocating"}
"""Node states in which a viz server on that node cannot serve."""


class AzureBatchBackend:
    """Viz server jobs as tasks in one Azure Batch job on an existing pool.

    Args:
        account_url: the Batch account's endpoint, ``https://ACCOUNT.REGION.batch.azure.com``.
        pool_id: the existing pool the tasks run on.
        account_name: the account's name (read from ``account_url`` when empty; needed with a shared key).
        account_key: the shared key (a str or pydantic ``SecretStr``); empty: read
            ``account_key_env``; still empty: Entra ID.
        account_key_env: environment variable holding the shared key on the gateway's machine.
        auth: ``auto`` (key if there is one, else Entra ID), ``shared_key`` or ``entra``.
        job_id: the Batch job holding the viz tasks (created on the pool when missing).
        vm_size, gpus: what the pool must offer; checked against the pool at the first submit.
        python: the interpreter on the nodes with prefect-hpcviz installed.
        setup: shell lines run before the server (``source /opt/hpcviz/bin/activate``).
        serve_host: address the server listens on; with ``0.0.0.0`` it reports the node's IP address.
        walltime: Batch ends a task after this long (``HH:MM:SS`` or ``D-HH:MM:SS``; None: never).
        storage_account_url: Blob endpoint for staging ``az://`` data and reading uploaded logs.
        storage_identity: resource id of the pool's managed identity for Blob (else a SAS in the URL).
        storage_account_key, storage_key_env: key to read uploaded logs (else Entra ID).
        logs_container: container the tasks' stdout/stderr are uploaded to (None: not uploaded).
        stop_timeout_s: how long :meth:`stop` waits for Batch to report the task completed.
        gateway_id: the tag of the gateway that owns this backend's tasks: every
            task it adds carries it (environment setting ``HPCVIZ_GATEWAY_ID``)
            and :meth:`list_jobs` lists only tasks with it, so gateways that
            share a Batch job never reap each other's tasks. The gateway sets
            it from its database; None lists every task of the job.

    Example:
        >>> backend = AzureBatchBackend("https://acct.westeurope.batch.azure.com", "viz-pool", account_key="a2V5")
        >>> backend.account_name, "a2V5" in repr(backend)
        ('acct', False)
    """

    kind = "azure_batch"

    def __init__(
        self,
        account_url: str,
        pool_id: str,
        account_name: str | None = None,
        account_key: Any = None,
        account_key_env: str = "AZURE_BATCH_ACCOUNT_KEY",
        auth: str = "auto",
        job_id: str = "hpcviz-viz",
        vm_size: str | None = None,
        gpus: int = 0,
        python: str = "python3",
        setup: Sequence[str] = (),
        serve_host: str = "0.0.0.0",
        walltime: str | None = "01:00:00",
        storage_account_url: str | None = None,
        storage_identity: str | None = None,
        storage_account_key: Any = None,
        storage_key_env: str = "AZURE_STORAGE_KEY",
        logs_container: str | None = None,
        stop_timeout_s: float = 60.0,
        gateway_id: str | None = None,
    ) -> None:
        parsed = urlparse(str(account_url or ""))
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise InputError(
                f"account_url {account_url!r}", "is not a Batch account URL", "give https://ACCOUNT.REGION.batch.azure.com"
            )
        self.account_url = str(account_url).rstrip("/")
        host_match = _ACCOUNT_HOST.match(parsed.hostname or "")
        self.account_name = account_name or (host_match.group(1) if host_match else None)
        self._account_key = Secret.from_value(account_key) or Secret.from_value(os.environ.get(account_key_env))
        self.auth = check_auth(auth, self.account_name, self._account_key)
        for name, value in (("pool_id", pool_id), ("job_id", job_id)):
            if not value or not _ID.match(str(value)):
                raise InputError(f"{name} {value!r}", "is not a Batch id", "use 1-64 letters, digits, '-' or '_'")
        self.pool_id = str(pool_id)
        self.job_id = str(job_id)
        self.vm_size = vm_size or None
        self.gpus = int(gpus)
        if self.gpus < 0:
            raise InputError(f"gpus {gpus!r}", "must not be negative", "give 0 or the GPUs a viz server needs")
        if self.gpus and self.vm_size and not _GPU_VM.match(self.vm_size):
            raise InputError(
                f"vm_size {self.vm_size!r}", f"has no GPU but gpus={self.gpus}", "use an N-series size (e.g. Standard_NC4as_T4_v3) or gpus=0"
            )
        self.python = str(python)
        self.setup = [str(line) for line in setup]
        self.serve_host = str(serve_host)
        self.walltime_s = _walltime_seconds(walltime) if walltime else None
        self.storage_account_url = storage_account_url.rstrip("/") if storage_account_url else None
        if self.storage_account_url and not self.storage_account_url.startswith(("https://", "http://")):
            raise InputError(
                f"storage_account_url {self.storage_account_url!r}", "is not a Blob endpoint", "give https://ACCOUNT.blob.core.windows.net"
            )
        if logs_container and not self.storage_account_url:
            raise InputError("logs_container", "needs storage_account_url", "give the Blob endpoint the logs go to")
        self.storage_identity = storage_identity or None
        self._storage_key = Secret.from_value(storage_account_key) or Secret.from_value(os.environ.get(storage_key_env))
        self.logs_container = logs_container or None
        self.stop_timeout_s = float(stop_timeout_s)
        self.gateway_id = str(gateway_id) if gateway_id else None
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._checked = False
        self._stopping: set[str] = set()
        self._nodes: dict[str, str] = {}  # batch job id -> node address

    def __repr__(self) -> str:
        return (
            f"AzureBatchBackend(account_url={self.account_url!r}, account_name={self.account_name!r}, "
            f"auth={self.auth!r}, pool_id={self.pool_id!r}, job_id={self.job_id!r})"
        )

    # ---------------------------------------------------------------- client
    def client(self) -> Any:
        """The azure-batch ``BatchClient`` (made on first use)."""
        with self._client_lock:
            if self._client is None:
                from azure.batch import BatchClient

                credential = batch_credential(self.auth, self.account_name, self._account_key)
                self._client = BatchClient(self.account_url, credential)
            return self._client

    async def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client().method(*args)`` in a thread; Batch's refusals as LaunchError naming ``what``."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

        def call():
            result = getattr(self.client(), method)(*args, **kwargs)
            return b"".join(result) if method == "download_task_file" else result

        try:
            return await asyncio.to_thread(call)
        except HttpResponseError as exc:
            refused = isinstance(exc, ClientAuthenticationError) or getattr(exc, "status_code", None) in (401, 403)
            if not refused:
                raise
            raise LaunchError(
                f"{what}: Azure Batch refused the credentials ({_error_text(exc)}). Check account_name and the key, "
                "or give the identity the 'Azure Batch Data Contributor' role on the account."
            ) from None
        except ServiceRequestError as exc:
            raise LaunchError(f"{what}: cannot reach {self.account_url} ({_error_text(exc)}). Check account_url.") from None

    # ------------------------------------------------------------------ submit
    def task_specification(self, spec: JobSpec, task_id: str | None = None) -> TaskSpecification:
        """The Batch task for ``spec`` (runnable locally too, with ``LocalDispatcher``).

        Example:
            >>> backend = AzureBatchBackend("https://a.b.batch.azure.com", "pool", account_key="a2V5")
            >>> spec = JobSpec("v", ["/usr/bin/python3", "-m", "prefect_hpcviz.viz.serve"],
            ...                assignment={"app": "explorer", "argv": ["--data", "/d"]})
            >>> backend.task_specification(spec, "t1").command[:2]
            ['/bin/bash', '-c']
        """
        task_id = task_id or f"{_safe_name(spec.name)[:48]}-{secrets.token_hex(4)}"
        inputs: list[InputFile] = []
        if spec.assignment is None:
            command = [str(part) for part in spec.command]
        else:
            argv = [str(a) for a in spec.assignment["argv"]]
            argv, inputs = self._stage_data(argv)
            command = [self.python, "-m", _SERVE_MODULE, *argv, "--host", self.serve_host]
        lines, advertise = ["exec 2>&1", *self.setup], ""
        reverse = spec.assignment is not None and "--reverse" in spec.assignment["argv"]
        if spec.assignment is not None and self.serve_host in ("0.0.0.0", "::") and not reverse:
            # Report the node's private address: its host name may not resolve where the gateway runs
            # (in reverse mode the server dials the gateway and reports no address).
            lines.append("address=$(hostname -I 2>/dev/null | cut -d' ' -f1)")
            advertise = ' --advertise-host "${address:-$(hostname)}"'
        script = "\n".join([*lines, f"exec {shlex.join(command)}{advertise}"])
        outputs = []
        if self.logs_container:
            outputs.append(
                OutputFile("../std*.txt", f"{self.storage_account_url}/{self.logs_container}", f"{self.job_id}/{task_id}", "completion")
            )
        return TaskSpecification(
            task_id=task_id,
            command=["/bin/bash", "-c", script],
            env={str(k): str(v) for k, v in spec.env.items()}
            | ({"HPCVIZ_GPUS": str(self.gpus)} if self.gpus else {})
            | ({GATEWAY_ID_SETTING: self.gateway_id} if self.gateway_id else {}),
            inputs=inputs,
            outputs=outputs,
            max_wall_clock_s=self.walltime_s,
            display_name=spec.name[:1024],
        )

    def _stage_data(self, argv: list[str]) -> tuple[list[str], list[InputFile]]:
        """``--data az://c/p`` -> a resource file staged into ``data/`` and ``--data data/<name>``."""
        if "--data" not in argv or not self.storage_account_url:
            return argv, []
        index = argv.index("--data") + 1
        url = urlparse(argv[index])
        if url.scheme not in ("az", "abfs", "abfss") or not url.netloc:
            return argv, []
        path = url.path.strip("/")
        container = f"{self.storage_account_url}/{url.netloc}"
        folder, _, name = path.rpartition("/")
        if "." in name:  # a file: stage its folder too, so that a .pvd finds its pieces
            staged = InputFile(container, f"{folder}/" if folder else "", "data")
        else:
            staged = InputFile(container, f"{path}/", f"data/{name}")
        return [*argv[:index], f"data/{name}", *argv[index + 1 :]], [staged]

    async def submit(self, spec: JobSpec) -> str:
        """Check the pool (once), make the job if missing, add the task; ``"<batch job>:<task>"``."""
        if not spec.command:
            raise InputError(f"job {spec.name}", "the command is empty", "give the program to run")
        from azure.batch import models
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        task = self.task_specification(spec)
        if not self._checked:
            await self._check_pool()
            try:
                await self._call(
                    f"job {self.job_id}",
                    "create_job",
                    models.BatchJobCreateOptions(id=self.job_id, pool_info=models.BatchPoolInfo(pool_id=self.pool_id)),
                )
            except ResourceExistsError:
                pass
            job = await self._call(f"job {self.job_id}", "get_job", self.job_id)
            if _value(job.state) not in ("active", "enabling"):
                raise LaunchError(
                    f"Batch job {self.job_id} is {_value(job.state)} and takes no new tasks; give the launcher another job_id "
                    "or delete that job."
                )
            self._checked = True
        try:
            await self._call(f"task in job {self.job_id}", "create_task", self.job_id, task.to_batch(self.storage_identity))
        except HttpResponseError as exc:
            raise LaunchError(f"Azure Batch refused the viz server task: {_error_text(exc)}") from None
        return f"{self.job_id}:{task.task_id}"

    async def _check_pool(self) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            pool = await self._call(f"pool {self.pool_id}", "get_pool", self.pool_id)
        except ResourceNotFoundError:
            raise InputError(
                f"pool_id {self.pool_id!r}", f"no such pool in {self.account_url}", "create the pool or give an existing pool's id"
            ) from None
        if self.vm_size and _value(pool.vm_size).lower() != self.vm_size.lower():
            raise InputError(
                f"vm_size {self.vm_size!r}", f"pool {self.pool_id} has {pool.vm_size} nodes", "give the pool's VM size, or another pool"
            )
        if self.gpus and not _GPU_VM.match(_value(pool.vm_size)):
            raise InputError(
                f"gpus {self.gpus}", f"pool {self.pool_id} has {pool.vm_size} nodes, without GPUs", "use a pool of N-series VMs or gpus=0"
            )
        return pool

    # ------------------------------------------------------------------- state
    async def state(self, job_id: str) -> JobStatus:
        """queued (why), starting, running (node address, end time), done or failed (Batch's reason)."""
        from azure.core.exceptions import ResourceNotFoundError

        batch_job, task_id = _split(job_id)
        try:
            task = await self._call(f"task {task_id}", "get_task", batch_job, task_id)
        except ResourceNotFoundError:
            if job_id in self._stopping:
                return JobStatus(JobState.DONE, reason="stopped on request")
            return JobStatus(JobState.FAILED, reason=f"Batch no longer knows task {task_id} (its job {batch_job} was deleted?)")
        state = _value(task.state)
        if state == "active":
            return JobStatus(JobState.QUEUED, reason=await self._queued_reason())
        node_info = task.node_info
        node_id = node_info.node_id if node_info else None
        if state == "completed":
            return self._completed(job_id, task, node_id)
        node = await self._node(job_id, node_info)
        if isinstance(node, JobStatus):
            return node
        if state == "preparing":
            return JobStatus(JobState.STARTING, node=node)
        started = task.execution_info.start_time if task.execution_info else None
        ends_at = started.timestamp() + self.walltime_s if started and self.walltime_s else None
        return JobStatus(JobState.RUNNING, node=node, ends_at=ends_at)

    async def _node(self, job_id: str, node_info: Any) -> str | JobStatus | None:
        """The node's address, or a failed status when the node cannot serve."""
        if node_info is None or not node_info.node_id:
            return None
        node = await self._call(f"node {node_info.node_id}", "get_node", node_info.pool_id or self.pool_id, node_info.node_id)
        node_state = _value(node.state)
        if node_state in BAD_NODE_STATES:
            errors = "; ".join(f"{e.code}: {e.message}" for e in (node.errors or []))
            return JobStatus(
                JobState.FAILED,
                reason=f"node {node.id} of pool {self.pool_id} is {node_state}" + (f" ({errors})" if errors else ""),
                node=node.ip_address or node.id,
            )
        self._nodes[job_id] = node.ip_address or node.id
        return self._nodes[job_id]

    async def _queued_reason(self) -> str:
        pool = await self._call(f"pool {self.pool_id}", "get_pool", self.pool_id)
        current = (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)
        target = (pool.target_dedicated_nodes or 0) + (pool.target_low_priority_nodes or 0)
        errors = "; ".join(f"{e.code}: {e.message}" for e in (pool.resize_errors or []))
        if current == 0 and target == 0 and not pool.enable_auto_scale:
            return f"pool {self.pool_id} has no nodes and asks for none; resize it or enable autoscale" + (f" ({errors})" if errors else "")
        if current < target or _value(pool.allocation_state) == "resizing":
            return f"pool {self.pool_id} is allocating nodes ({current} of {target})" + (f"; {errors}" if errors else "")
        if current == 0:
            return f"pool {self.pool_id} has no nodes yet (autoscale)"
        return f"waiting for a free task slot on pool {self.pool_id}'s {current} node(s)"

    def _completed(self, job_id: str, task: Any, node_id: str | None) -> JobStatus:
        info = task.execution_info
        node = self._nodes.get(job_id, node_id)
        failure = info.failure_info if info else None
        exit_code = info.exit_code if info else None
        ended_by_user = failure is not None and failure.code == "TaskEnded" and "user request" in str(failure.message).lower()
        if job_id in self._stopping or ended_by_user:
            return JobStatus(JobState.DONE, reason="stopped on request", node=node)
        if exit_code not in (0, None) and (failure is None or failure.code == "FailureExitCode"):
            return JobStatus(JobState.FAILED, reason=f"exit code {exit_code}", node=node)
        if failure is not None:  # a resource file that did not download, the wall clock limit, ...
            return JobStatus(JobState.FAILED, reason=f"{failure.code}: {failure.message}", node=node)
        return JobStatus(JobState.DONE, node=node)

    # -------------------------------------------------------------------- list
    async def list_jobs(self) -> dict[str, JobStatus]:
        """Tasks of this backend's Batch job that have not completed (only this gateway's, with ``gateway_id``)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            tasks = await self._call(f"job {self.job_id}", "list_tasks", self.job_id)
            tasks = await asyncio.to_thread(list, tasks)
        except ResourceNotFoundError:
            return {}
        jobs = {}
        for task in tasks:
            if self.gateway_id and _setting(task, GATEWAY_ID_SETTING) != self.gateway_id:
                continue  # another gateway's task (or one added by hand): not ours to reap
            state = _value(task.state)
            if state == "active":
                jobs[f"{self.job_id}:{task.id}"] = JobStatus(JobState.QUEUED)
            elif state in ("preparing", "running"):
                jobs[f"{self.job_id}:{task.id}"] = JobStatus(JobState.RUNNING, node=task.node_info.node_id if task.node_info else None)
        return jobs

    # -------------------------------------------------------------------- stop
    async def stop(self, job_id: str) -> None:
        """Terminate the task (Batch kills its processes) and wait until Batch says it completed."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        batch_job, task_id = _split(job_id)
        status = await self.state(job_id)
        if status.state.ended:
            return
        self._stopping.add(job_id)
        try:
            await self._call(f"task {task_id}", "terminate_task", batch_job, task_id)
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            raise LaunchError(f"Azure Batch did not terminate task {task_id}: {_error_text(exc)}") from None
        deadline = time.monotonic() + self.stop_timeout_s
        delay = 0.1
        while time.monotonic() < deadline:
            if (await self.state(job_id)).state.ended:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        log.warning("task %s has not completed %g s after it was terminated", task_id, self.stop_timeout_s)

    # -------------------------------------------------------------------- logs
    async def logs(self, job_id: str, tail: int = 100) -> str:
        """The last ``tail`` lines of the task's output: from the node, else from the logs container."""
        from azure.core.exceptions import HttpResponseError

        batch_job, task_id = _split(job_id)
        if tail <= 0:
            return ""
        try:
            data = await self._call(f"task {task_id}", "download_task_file", batch_job, task_id, "stdout.txt")
        except (HttpResponseError, LaunchError) as exc:
            if not self.logs_container:
                log.info("no log of task %s on its node (%s) and no logs_container", task_id, _error_text(exc))
                return ""
            data = await asyncio.to_thread(self._uploaded_log, batch_job, task_id)
        return _tail(data, tail)

    def _uploaded_log(self, batch_job: str, task_id: str) -> bytes:
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContainerClient

        container = ContainerClient.from_container_url(
            f"{self.storage_account_url}/{self.logs_container}", credential=self._storage_credential()
        )
        try:
            return container.download_blob(f"{batch_job}/{task_id}/stdout.txt").readall()
        except AzureError as exc:
            log.info("no uploaded log for task %s (%s)", task_id, _error_text(exc))
            return b""

    def _storage_credential(self) -> Any:
        if self._storage_key is not None:
            from azure.core.credentials import AzureNamedKeyCredential

            return AzureNamedKeyCredential(_storage_account_name(str(self.storage_account_url)), self._storage_key.reveal())
        if self.storage_account_url and "sig=" in self.storage_account_url:
            return None
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    async def close(self) -> None:
        """Close the SDK's HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)


def _value(field: Any) -> str:
    """An SDK enum or string as lower-case text (``BatchTaskState.ACTIVE`` -> ``active``)."""
    return str(getattr(field, "value", field) or "").lower()


def _setting(task: Any, name: str) -> str | None:
    """The value of the task's environment setting ``name``, None when it has none."""
    return next((s.value for s in task.environment_settings or () if s.name == name), None)


def _split(job_id: str) -> tuple[str, str]:
    batch_job, sep, task_id = str(job_id).partition(":")
    if not sep or not _ID.match(batch_job) or not _ID.match(task_id):
        raise InputError(f"job id {job_id!r}", "is not an Azure Batch job id", "pass the id AzureBatchBackend.submit returned (<job>:<task>)")
    return batch_job, task_id


def _walltime_seconds(walltime: str) -> int:
    match = _WALLTIME.match(str(walltime).strip())
    if not match:
        raise InputError(f"walltime {walltime!r}", "is not a time limit", 'write "HH:MM:SS" or "D-HH:MM:SS", e.g. "01:00:00"')
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def _storage_account_name(url: str) -> str:
    """``https://acct.blob.core.windows.net`` -> acct; ``http://127.0.0.1:10000/devstoreaccount1`` -> devstoreaccount1."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if re.match(r"^[\d.]+$", host) or host == "localhost":
        return parsed.path.strip("/").split("/")[0]
    return host.split(".")[0]


def _error_text(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        return f"{error.code}: {error.message}"
    message = getattr(exc, "message", None) or str(exc)
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name).strip("-") or "hpcviz"


def _tail(data: bytes, lines: int) -> str:
    text = data.decode("utf-8", errors="replace")
    return "".join(text.splitlines(keepends=True)[-lines:])


__all__ = ["AzureBatchBackend", "BAD_NODE_STATES"]
