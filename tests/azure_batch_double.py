"""TEST DOUBLE of the Azure Batch REST API, served on loopback. It is not Azure Batch.

Azure Batch has no emulator, so the tests drive the real azure-batch SDK
(``BatchClient(double.url, AzureNamedKeyCredential(...))``) against this
small HTTP server. It answers the operations our code calls, with the JSON
shapes of the Batch REST API (api-version 2025-06-01):

    GET  /pools, /pools/{pool}                       POST /jobs, GET /jobs, /jobs/{job}
    DELETE /jobs/{job}, POST /jobs/{job}/terminate   POST /jobs/{job}/tasks, GET /jobs/{job}/tasks
    GET  /jobs/{job}/tasks/{task}                    POST /jobs/{job}/tasks/{task}/terminate
    GET  /jobs/{job}/tasks/{task}/files/{path}       GET  /pools/{pool}/nodes/{node}

What is real about it:

- every request must carry a valid ``SharedKey ACCOUNT:SIGNATURE`` header
  (checked by recomputing the HMAC-SHA256 of the canonical request, as the
  service does); none gets 401, a wrong one 403, as from Batch;
- a task assigned to a node really runs: the double hands its specification
  (read back from the REST JSON with ``TaskSpecification.from_batch``) to the
  project's :class:`LocalDispatcher`, which downloads its resource files
  (from Azurite, say), runs the command as a local process in
  ``<root>/<node>/<job>/<task>/wd`` and uploads its output files;
- tasks wait ("active") while no node has a free slot; ``resize`` and
  ``set_node_state`` change the pool as an operator or a failing VM would.

What it leaves out: everything else (autopools, job schedules, retries,
certificates, multi-instance tasks, OData filters, paging), and time: nodes
appear at once when the pool is resized.

Example::

    with BatchDouble(tmp_path) as double:
        double.add_pool("viz", vm_size="STANDARD_D2S_V3", nodes=1)
        client = BatchClient(double.url, AzureNamedKeyCredential(double.account_name, double.account_key))
        client.get_pool("viz").vm_size          # 'STANDARD_D2S_V3'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from prefect_hpcviz.viz.backends.batch_dispatch import LocalDispatcher, LocalTask, StagingError
from prefect_hpcviz.viz.backends.batch_tasks import TaskSpecification

_SIGNED_HEADERS = (
    "content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
    "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range",
)  # fmt: skip


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is not news
            super().handle_error(request, client_address)


class BatchError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


@dataclass
class Node:
    id: str
    state: str = "idle"
    errors: list[dict] = field(default_factory=list)
    tasks: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class Pool:
    id: str
    vm_size: str
    slots_per_node: int
    nodes: dict[str, Node] = field(default_factory=dict)
    target: int = 0
    resize_errors: list[dict] = field(default_factory=list)


@dataclass
class Task:
    job_id: str
    body: dict[str, Any]
    state: str = "active"
    created: str = field(default_factory=_now)
    node: tuple[str, str] | None = None  # (pool, node)
    local: LocalTask | None = None
    task_dir: Path | None = None
    start_time: str | None = None
    end_time: str | None = None
    exit_code: int | None = None
    failure: dict | None = None
    terminating: bool = False

    @property
    def id(self) -> str:
        return self.body["id"]


class BatchDouble:
    """A loopback HTTP test double of the Azure Batch API that runs tasks as local processes.

    Args:
        root: folder for the nodes' task folders.
        blob_credential: what the pool's managed identity would be, for resource and
            output files without a SAS (e.g. Azurite's ``AzureNamedKeyCredential``).
    """

    def __init__(self, root: str | Path, blob_credential: Any = None, account_name: str = "hpcvizdouble") -> None:
        self.root = Path(root)
        self.account_name = account_name
        self.account_key = base64.b64encode(secrets.token_bytes(64)).decode()
        self.blob_credential = blob_credential
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.tasks: dict[tuple[str, str], Task] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth_failures = 0
        self._lock = threading.RLock()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="batch-double", daemon=True)

    @property
    def url(self) -> str:
        """The account endpoint to give ``BatchClient`` (``account_url`` of the backend)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> BatchDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and every task process still running."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            running = [t for t in self.tasks.values() if t.local is not None and t.state == "running"]
            for task in running:
                task.terminating = True
        for task in running:
            LocalDispatcher(self.root).terminate(task.local, grace_s=2.0)

    # ------------------------------------------------------------- operator
    def add_pool(self, pool_id: str, vm_size: str = "STANDARD_D2S_V3", nodes: int = 1, slots_per_node: int = 1) -> None:
        with self._lock:
            self.pools[pool_id] = Pool(pool_id, vm_size, slots_per_node)
        self.resize(pool_id, nodes)

    def resize(self, pool_id: str, nodes: int) -> None:
        """Make the pool have ``nodes`` nodes at once (new ones idle) and schedule waiting tasks."""
        with self._lock:
            pool = self.pools[pool_id]
            pool.target = nodes
            index = 0
            while len(pool.nodes) < nodes:
                node_id = f"tvmps_{pool_id}_{index}"
                index += 1
                pool.nodes.setdefault(node_id, Node(node_id))
            for node_id in list(pool.nodes)[nodes:]:
                if not pool.nodes[node_id].tasks:
                    del pool.nodes[node_id]
        self._schedule()

    def set_node_state(self, pool_id: str, node_id: str, state: str, errors: list[dict] | None = None) -> None:
        """What a VM failure looks like: e.g. ``("unusable", [{"code": "DiskFull", "message": "..."}])``."""
        with self._lock:
            node = self.pools[pool_id].nodes[node_id]
            node.state = state
            node.errors = list(errors or [])
        self._schedule()

    def delete_task_files(self, job_id: str, task_id: str) -> None:
        """Remove a task's folder, as a reimaged or removed node would."""
        with self._lock:
            task = self.tasks[(job_id, task_id)]
        if task.task_dir is not None:
            shutil.rmtree(task.task_dir, ignore_errors=True)

    def process_of(self, job_id: str, task_id: str):
        """The local ``Popen`` running the task (None before it started)."""
        with self._lock:
            task = self.tasks.get((job_id, task_id))
            return task.local.process if task and task.local else None

    # ------------------------------------------------------------ scheduling
    def _schedule(self) -> None:
        with self._lock:
            for task in self.tasks.values():
                if task.state != "active" or self.jobs.get(task.job_id, {}).get("state") != "active":
                    continue
                pool = self.pools.get(self.jobs[task.job_id]["poolInfo"]["poolId"])
                if pool is None:
                    continue
                for node in pool.nodes.values():
                    if node.state in ("idle", "running") and len(node.tasks) < pool.slots_per_node:
                        node.tasks.add((task.job_id, task.id))
                        node.state = "running"
                        task.node = (pool.id, node.id)
                        task.state = "running"
                        task.start_time = _now()
                        threading.Thread(target=self._run, args=(task,), daemon=True).start()
                        break

    def _run(self, task: Task) -> None:
        pool_id, node_id = task.node
        spec = TaskSpecification.from_batch(task.body)
        dispatcher = LocalDispatcher(self.root / node_id / task.job_id, self.blob_credential)
        env = {"AZ_BATCH_NODE_ID": node_id, "AZ_BATCH_POOL_ID": pool_id, "AZ_BATCH_JOB_ID": task.job_id,
               "AZ_BATCH_ACCOUNT_NAME": self.account_name}  # fmt: skip
        task.task_dir = dispatcher.root / spec.task_id
        try:
            with self._lock:
                if task.terminating:
                    raise StagingError("TaskEnded", "Task Was Ended by User Request")
            local = dispatcher.start(spec, env)
        except StagingError as exc:
            self._complete(task, None, {"category": "UserError", "code": exc.code, "message": str(exc)})
            return
        with self._lock:
            task.local = local
            terminating = task.terminating
        if terminating:
            dispatcher.terminate(local, grace_s=2.0)
        dispatcher.wait(local)
        result = dispatcher.finish(local)
        code = result.exit_code
        if code is not None and code < 0:
            code = 128 - code
        failure = None
        if task.terminating:
            failure = {"category": "UserError", "code": "TaskEnded", "message": "Task Was Ended by User Request"}
        elif result.failure is not None:
            failure = {"category": "UserError", "code": result.failure.code, "message": str(result.failure)}
        elif code != 0:
            failure = {"category": "UserError", "code": "FailureExitCode", "message": "The task exited with an exit code representing a failure"}
        self._complete(task, code, failure)

    def _complete(self, task: Task, exit_code: int | None, failure: dict | None) -> None:
        with self._lock:
            task.state = "completed"
            task.end_time = _now()
            task.exit_code = exit_code
            task.failure = failure
            if task.node:
                node = self.pools[task.node[0]].nodes.get(task.node[1])
                if node is not None:
                    node.tasks.discard((task.job_id, task.id))
                    if node.state == "running" and not node.tasks:
                        node.state = "idle"
        self._schedule()

    def _terminate(self, task: Task) -> None:
        with self._lock:
            if task.state == "completed":
                return
            task.terminating = True
            local = task.local
            if task.state == "active":
                task.state = "completed"
                task.end_time = _now()
                task.failure = {"category": "UserError", "code": "TaskEnded", "message": "Task Was Ended by User Request"}
                return
        if local is not None:
            threading.Thread(target=LocalDispatcher(self.root).terminate, args=(local, 2.0), daemon=True).start()

    # ----------------------------------------------------------------- auth
    def check_auth(self, method: str, raw_path: str, headers: dict[str, str]) -> None:
        authorization = headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        account, _, signature = credential.partition(":")
        if scheme != "SharedKey" or account != self.account_name:
            self.auth_failures += 1
            raise BatchError(401, "AuthenticationFailed", "Server failed to authenticate the request: no SharedKey for this account.")
        signed = dict(headers)
        if method not in ("GET", "HEAD"):
            signed.setdefault("content-length", "0")
        text = method + "\n" + "".join(f"{signed.get(name, '')}\n" for name in _SIGNED_HEADERS)
        text += "".join(f"{name}:{value}\n" for name, value in sorted((k, v) for k, v in headers.items() if "ocp-" in k and v))
        url = urlparse(raw_path)
        text += f"/{self.account_name}{url.path}"
        query = parse_qs(url.query)
        text += "".join(f"\n{name}:{query[name][0]}" for name in sorted(query) if query[name][0])
        expected = base64.b64encode(
            hmac.new(base64.b64decode(self.account_key), text.encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(expected, signature):
            self.auth_failures += 1
            raise BatchError(403, "AuthenticationFailed", "The MAC signature found in the HTTP request is not the same as any computed signature.")

    # ------------------------------------------------------------ rendering
    def pool_json(self, pool: Pool) -> dict:
        usable = [n for n in pool.nodes.values()]
        return {
            "id": pool.id, "url": f"{self.url}/pools/{pool.id}", "state": "active", "allocationState": "steady",
            "vmSize": pool.vm_size, "currentDedicatedNodes": len(usable), "targetDedicatedNodes": pool.target,
            "currentLowPriorityNodes": 0, "targetLowPriorityNodes": 0, "enableAutoScale": False,
            "taskSlotsPerNode": pool.slots_per_node, "resizeErrors": pool.resize_errors or None,
        }  # fmt: skip

    def node_json(self, pool: Pool, node: Node) -> dict:
        return {
            "id": node.id, "url": f"{self.url}/pools/{pool.id}/nodes/{node.id}", "state": node.state,
            "schedulingState": "enabled", "ipAddress": "127.0.0.1", "vmSize": pool.vm_size,
            "runningTasksCount": len(node.tasks), "isDedicated": True, "errors": node.errors or None,
        }  # fmt: skip

    def task_json(self, task: Task) -> dict:
        body = {**task.body, "url": f"{self.url}/jobs/{task.job_id}/tasks/{task.id}", "state": task.state,
                "creationTime": task.created, "stateTransitionTime": task.end_time or task.start_time or task.created}  # fmt: skip
        if task.node:
            body["nodeInfo"] = {"poolId": task.node[0], "nodeId": task.node[1], "taskRootDirectory": f"workitems/{task.job_id}/job-1/{task.id}"}
        if task.start_time or task.state == "completed":
            info: dict[str, Any] = {"retryCount": 0, "requeueCount": 0}
            if task.start_time:
                info["startTime"] = task.start_time
            if task.state == "completed":
                info["endTime"] = task.end_time
                info["result"] = "success" if task.failure is None else "failure"
                if task.exit_code is not None:
                    info["exitCode"] = task.exit_code
                if task.failure is not None:
                    info["failureInfo"] = task.failure
            body["executionInfo"] = info
        return body


def _handler(double: BatchDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            path = urlparse(self.path).path
            double.requests.append((method, unquote(path)))
            try:
                double.check_auth(method, self.path, headers)
                status, payload = _route(double, method, [unquote(p) for p in path.strip("/").split("/")], body)
            except BatchError as exc:
                status, payload = exc.status, {"code": exc.code, "message": {"lang": "en-US", "value": exc.message}}
            if isinstance(payload, bytes):
                data, kind = payload, "application/octet-stream"
            elif payload is None:
                data, kind = b"", None
            else:
                data, kind = json.dumps(payload).encode(), "application/json;odata=minimalmetadata"
            self.send_response(status)
            if kind:
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", secrets.token_hex(8))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _route(double: BatchDouble, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
    with double._lock:
        match (method, parts):
            case ("GET", ["pools"]):
                return 200, {"value": [double.pool_json(p) for p in double.pools.values()]}
            case ("GET", ["pools", pool_id]):
                return 200, double.pool_json(_get(double.pools, pool_id, "PoolNotFound"))
            case ("GET", ["pools", pool_id, "nodes", node_id]):
                pool = _get(double.pools, pool_id, "PoolNotFound")
                return 200, double.node_json(pool, _get(pool.nodes, node_id, "NodeNotFound"))
            case ("POST", ["jobs"]):
                job = json.loads(body)
                if job["id"] in double.jobs:
                    raise BatchError(409, "JobExists", "The specified job already exists.")
                double.jobs[job["id"]] = {**job, "state": "active", "creationTime": _now(), "url": f"{double.url}/jobs/{job['id']}"}
                return 201, None
            case ("GET", ["jobs"]):
                return 200, {"value": list(double.jobs.values())}
            case ("GET", ["jobs", job_id]):
                return 200, _get(double.jobs, job_id, "JobNotFound")
            case ("DELETE", ["jobs", job_id]):
                _get(double.jobs, job_id, "JobNotFound")
                for key, task in list(double.tasks.items()):
                    if task.job_id == job_id:
                        double._terminate(task)
                        del double.tasks[key]
                del double.jobs[job_id]
                return 202, None
            case ("POST", ["jobs", job_id, "terminate"]):
                job = _get(double.jobs, job_id, "JobNotFound")
                for task in double.tasks.values():
                    if task.job_id == job_id:
                        double._terminate(task)
                job["state"] = "completed"
                return 202, None
            case ("POST", ["jobs", job_id, "tasks"]):
                job = _get(double.jobs, job_id, "JobNotFound")
                if job["state"] != "active":
                    raise BatchError(409, "JobCompleted", "The specified job is already in a completed state.")
                task = json.loads(body)
                if (job_id, task["id"]) in double.tasks:
                    raise BatchError(409, "TaskExists", "The specified task already exists.")
                double.tasks[(job_id, task["id"])] = Task(job_id, task)
            case ("GET", ["jobs", job_id, "tasks"]):
                _get(double.jobs, job_id, "JobNotFound")
                return 200, {"value": [double.task_json(t) for t in double.tasks.values() if t.job_id == job_id]}
            case ("GET", ["jobs", job_id, "tasks", task_id]):
                return 200, double.task_json(_get(double.tasks, (job_id, task_id), "TaskNotFound"))
            case ("POST", ["jobs", job_id, "tasks", task_id, "terminate"]):
                double._terminate(_get(double.tasks, (job_id, task_id), "TaskNotFound"))
                return 204, None
            case ("GET", ["jobs", job_id, "tasks", task_id, "files", *path]):
                task = _get(double.tasks, (job_id, task_id), "TaskNotFound")
                file = (task.task_dir / "/".join(path)) if task.task_dir else None
                if file is None or not file.is_file():
                    raise BatchError(404, "FileNotFound", f"The specified file {'/'.join(path)} does not exist.")
                return 200, file.read_bytes()
            case _:
                raise BatchError(400, "InvalidUri", f"the test double does not implement {method} /{'/'.join(parts)}")
    double._schedule()
    return 201, None


def _get(table: dict, key: Any, code: str) -> Any:
    if key not in table:
        raise BatchError(404, code, f"The specified resource {key} does not exist.")
    return table[key]
