"""Run a Batch task specification on this machine, the way a Batch node would (tests, debugging).

The dispatcher lays a task out as Batch does: a task folder holding
``stdout.txt``, ``stderr.txt`` and the working directory ``wd/``; it
downloads the inputs into ``wd/``, runs the command there with Batch's
``AZ_BATCH_*`` variables, then uploads the outputs whose condition the exit
code meets::

    dispatcher = LocalDispatcher("/tmp/batch-tasks", blob_credential=AzureNamedKeyCredential(name, key))
    result = dispatcher.run(spec)                 # blocks; or start() + wait() + finish()
    print(result.exit_code, (result.task_dir / "stdout.txt").read_text())

Inputs come from Blob containers (``http(s)://`` container URLs, through
azure-storage-blob with ``blob_credential``, which stands in for the pool's
managed identity; a SAS in the URL works without one) or from any fsspec
folder URL (``file:///data``, ``memory://...``). Outputs go to Blob the same way.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_hpcviz.viz.backends.batch_tasks import InputFile, OutputFile, TaskSpecification
from prefect_hpcviz.viz.errors import InputError

log = logging.getLogger(__name__)


class StagingError(RuntimeError):
    """An input could not be downloaded or an output not uploaded; ``code`` is Batch's failure code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass
class LocalTask:
    """A task the dispatcher started: its folder and process."""

    spec: TaskSpecification
    task_dir: Path
    process: subprocess.Popen
    exit_code: int | None = None
    failure: StagingError | None = None

    @property
    def working_dir(self) -> Path:
        return self.task_dir / "wd"


@dataclass
class LocalTaskResult:
    """How a dispatched task ended: exit code (None if it never ran), failure (Batch's code and message)."""

    task_dir: Path
    exit_code: int | None
    failure: StagingError | None = None


class LocalDispatcher:
    """Runs :class:`TaskSpecification` s as local processes with Batch's file staging.

    Args:
        root: folder for the task folders (``<root>/<task id>``).
        blob_credential: credential for Blob containers given without a SAS
            (what the pool's managed identity would be): an
            ``AzureNamedKeyCredential``, a token credential or an account key dict.
        node_env: extra variables every task sees (``AZ_BATCH_NODE_ID`` & co.).

    Example:
        >>> import sys, tempfile
        >>> spec = TaskSpecification("hello", [sys.executable, "-c", "print('hi')"])
        >>> result = LocalDispatcher(tempfile.mkdtemp()).run(spec)
        >>> result.exit_code, (result.task_dir / "stdout.txt").read_text()
        (0, 'hi\\n')
    """

    def __init__(self, root: str | os.PathLike, blob_credential: Any = None, node_env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.blob_credential = blob_credential
        self.node_env = dict(node_env or {})

    def run(self, spec: TaskSpecification, timeout: float | None = None) -> LocalTaskResult:
        """Download, run, upload; block until done."""
        try:
            task = self.start(spec)
        except StagingError as exc:
            return LocalTaskResult(self.root / spec.task_id, None, exc)
        self.wait(task, timeout)
        return self.finish(task)

    # ----------------------------------------------------------------- steps
    def start(self, spec: TaskSpecification, extra_env: dict[str, str] | None = None) -> LocalTask:
        """Make the task folder, download the inputs, start the command (returns at once).

        Raises:
            StagingError: an input could not be downloaded (code ``ResourceContainerAccessDenied``
                or ``BlobDownloadMiscError``, as Batch reports it); nothing was started.
        """
        task_dir = self.root / spec.task_id
        working_dir = task_dir / "wd"
        working_dir.mkdir(parents=True, exist_ok=True)
        stdout = open(task_dir / "stdout.txt", "ab")
        stderr = open(task_dir / "stderr.txt", "ab")
        try:
            for item in spec.inputs:
                self._download(item, working_dir)
            env = {
                **os.environ,
                **self.node_env,
                **(extra_env or {}),
                "AZ_BATCH_TASK_ID": spec.task_id,
                "AZ_BATCH_TASK_DIR": str(task_dir),
                "AZ_BATCH_TASK_WORKING_DIR": str(working_dir),
                **{k: str(v) for k, v in spec.env.items()},
            }
            try:
                process = subprocess.Popen(
                    spec.command, cwd=working_dir, env=env, stdin=subprocess.DEVNULL,
                    stdout=stdout, stderr=stderr, start_new_session=True,
                )
            except OSError as exc:
                raise StagingError("CommandProgramNotFound", f"{spec.command[0]}: cannot start ({exc.strerror or exc})") from exc
        finally:
            stdout.close()
            stderr.close()
        return LocalTask(spec, task_dir, process)

    def wait(self, task: LocalTask, timeout: float | None = None) -> int:
        """Wait for the command to exit (killed after ``timeout`` or the task's wall clock limit)."""
        limit = min(t for t in (timeout, task.spec.max_wall_clock_s, float("inf")) if t is not None)
        try:
            task.exit_code = task.process.wait(None if limit == float("inf") else limit)
        except subprocess.TimeoutExpired:
            self.terminate(task)
        return task.exit_code

    def terminate(self, task: LocalTask, grace_s: float = 5.0) -> None:
        """SIGTERM to the task's process group, SIGKILL after ``grace_s``."""
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(task.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                task.exit_code = task.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def finish(self, task: LocalTask) -> LocalTaskResult:
        """Upload the outputs whose condition the exit code meets; the task's result."""
        succeeded = task.exit_code == 0
        for item in task.spec.outputs:
            if item.when == "completion" or (item.when == "success") == succeeded:
                try:
                    self._upload(item, task.working_dir)
                except StagingError as exc:
                    task.failure = task.failure or exc
        return LocalTaskResult(task.task_dir, task.exit_code, task.failure)

    # --------------------------------------------------------------- staging
    def _download(self, item: InputFile, working_dir: Path) -> None:
        target = (working_dir / item.target) if item.target else working_dir
        if not item.container_url.startswith(("http://", "https://")):
            self._download_fsspec(item, target)
            return
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContainerClient

        container = ContainerClient.from_container_url(item.container_url, credential=self._credential(item.container_url))
        try:
            if item.is_prefix:
                names = [b.name for b in container.list_blobs(name_starts_with=item.blob or None)]
                if not names:
                    raise StagingError("BlobDownloadMiscError", f"{item.container_url}: no blob under {item.blob!r}")
                for name in names:
                    _write_blob(container, name, target / name[len(item.blob):])
            else:
                _write_blob(container, item.blob, target if item.target else working_dir / item.blob.rsplit("/", 1)[-1])
        except AzureError as exc:
            code = "ResourceContainerAccessDenied" if getattr(exc, "status_code", None) in (401, 403) else "BlobDownloadMiscError"
            raise StagingError(code, f"cannot download {item.blob or '(container)'} from {_strip(item.container_url)}: {_first_line(exc)}") from exc

    def _download_fsspec(self, item: InputFile, target: Path) -> None:
        import fsspec

        source = f"{item.container_url.rstrip('/')}/{item.blob}".rstrip("/")
        fs, path = fsspec.core.url_to_fs(source)
        try:
            if item.is_prefix:
                target.mkdir(parents=True, exist_ok=True)
                fs.get(path.rstrip("/") + "/", str(target) + "/", recursive=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get(path, str(target))
        except (OSError, ValueError) as exc:
            raise StagingError("BlobDownloadMiscError", f"cannot download {source}: {exc}") from exc

    def _upload(self, item: OutputFile, working_dir: Path) -> None:
        matches = sorted(
            Path(p) for p in glob.glob(str(working_dir / item.pattern), recursive=True) if Path(p).is_file()
        )
        if not matches:
            return  # Batch uploads what matches; none is not an error
        if item.has_wildcards:
            base = Path(os.path.normpath(working_dir / _fixed_part(item.pattern)))
            names = [f"{item.path.rstrip('/')}/{p.resolve().relative_to(base.resolve())}".lstrip("/") for p in matches]
        else:
            names = [item.path or matches[0].name]
        if not item.container_url.startswith(("http://", "https://")):
            raise InputError(f"OutputFile.container_url {item.container_url!r}", "is not a Blob container URL", "give https://ACCOUNT.blob.core.windows.net/CONTAINER")
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContainerClient

        container = ContainerClient.from_container_url(item.container_url, credential=self._credential(item.container_url))
        try:
            for path, name in zip(matches, names):
                with open(path, "rb") as fh:
                    container.upload_blob(name, fh, overwrite=True)
        except AzureError as exc:
            raise StagingError("FileUploadMiscError", f"cannot upload to {_strip(item.container_url)}: {_first_line(exc)}") from exc

    def _credential(self, url: str) -> Any:
        return None if "sig=" in url else self.blob_credential


def _write_blob(container: Any, name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    with open(tmp, "wb") as fh:
        container.download_blob(name).readinto(fh)
    os.replace(tmp, target)


def _fixed_part(pattern: str) -> str:
    """The folders of a glob before its first wildcard (``out/**/*.vti`` -> ``out``)."""
    parts = []
    for part in pattern.split("/"):
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return "/".join(parts)


def _strip(url: str) -> str:
    return url.split("?", 1)[0]


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


__all__ = ["LocalDispatcher", "LocalTask", "LocalTaskResult", "StagingError"]
