"""Task specifications for Azure Batch: what to download, run and upload, as plain data.

A :class:`TaskSpecification` says everything a Batch task needs: the files
to download before the command starts (:class:`InputFile`, Batch's resource
files), the command and its environment, and the files to upload when it
ends (:class:`OutputFile`, Batch's output files). The same specification is
either sent to Azure Batch (:meth:`TaskSpecification.to_batch`) or run on
this machine by :class:`~prefect_hpcviz.viz.backends.batch_dispatch.LocalDispatcher`
for tests and debugging::

    spec = TaskSpecification(
        task_id="reduce-1",
        command=["python3", "-m", "prefect_hpcviz.viz.serve", "--data", "data"],
        env={"HPCVIZ_SESSION_KEY": key},
        inputs=[InputFile(container_url="https://acct.blob.core.windows.net/runs",
                          blob="run1/reduced/", target="data")],
        outputs=[OutputFile("../std*.txt", container_url="https://acct.blob.core.windows.net/logs",
                            path="viz/reduce-1", when="completion")],
    )
    task = spec.to_batch(identity="/subscriptions/.../userAssignedIdentities/viz")

Paths follow Batch: inputs land relative to the task's working directory
(``$AZ_BATCH_TASK_WORKING_DIR``); output patterns are relative to it too,
and ``../stdout.txt`` / ``../stderr.txt`` are the task's own logs. A pattern
without wildcards uploads one file to exactly ``path``; with wildcards,
``path`` is a folder and the files keep their names below it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prefect_hpcviz.viz.errors import InputError

UPLOAD_WHEN = ("success", "failure", "completion")
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WILDCARD = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    """Blob(s) downloaded into the task's working directory before the command runs.

    Args:
        container_url: the container, ``https://ACCOUNT.blob.core.windows.net/CONTAINER``
            (with a SAS query, or read through the pool's managed identity).
            The local dispatcher also takes any fsspec folder URL (``file:///data``).
        blob: one blob's name, or a prefix ending in ``/`` (every blob under it);
            empty: the whole container.
        target: where it lands, relative to the working directory (a folder for a prefix).

    Example:
        >>> InputFile("https://acct.blob.core.windows.net/runs", "run1/reduced/", "data").is_prefix
        True
    """

    container_url: str
    blob: str = ""
    target: str = ""

    @property
    def is_prefix(self) -> bool:
        """True when ``blob`` names a folder (all blobs under it), not one blob."""
        return self.blob == "" or self.blob.endswith("/")

    def to_batch(self, identity: str | None = None) -> Any:
        """The azure-batch ``ResourceFile`` for this input."""
        from azure.batch import models

        _check_blob_url(self.container_url, "InputFile.container_url")
        reference = models.BatchNodeIdentityReference(resource_id=identity) if identity else None
        if self.is_prefix:
            return models.ResourceFile(
                storage_container_url=self.container_url,
                blob_prefix=self.blob or None,
                file_path=self.target or None,
                identity_reference=reference,
            )
        return models.ResourceFile(
            http_url=f"{_without_query(self.container_url)}/{self.blob}{_query(self.container_url)}",
            file_path=self.target or self.blob.rsplit("/", 1)[-1],
            identity_reference=reference,
        )


@dataclass(frozen=True)
class OutputFile:
    """Files uploaded from the task's working directory when the task ends.

    Args:
        pattern: glob relative to the working directory (``out/**/*``,
            ``../std*.txt`` for the task's own stdout and stderr).
        container_url: the destination container (SAS, or the pool's managed identity).
        path: blob name (pattern without wildcards) or folder (with wildcards).
        when: ``success`` (exit code 0), ``failure`` or ``completion`` (either).

    Example:
        >>> OutputFile("../std*.txt", "https://acct.blob.core.windows.net/logs", "viz/t1").when
        'completion'
    """

    pattern: str
    container_url: str
    path: str = ""
    when: str = "completion"

    def __post_init__(self) -> None:
        if self.when not in UPLOAD_WHEN:
            raise InputError(f"OutputFile.when {self.when!r}", "is not an upload condition", f"use one of {', '.join(UPLOAD_WHEN)}")
        if not self.pattern:
            raise InputError("OutputFile.pattern", "is empty", "give a glob relative to the working directory, e.g. out/**/*")

    @property
    def has_wildcards(self) -> bool:
        """True when ``pattern`` may match many files (then ``path`` is a folder)."""
        return bool(_WILDCARD.search(self.pattern))

    def to_batch(self, identity: str | None = None) -> Any:
        """The azure-batch ``OutputFile`` for this output."""
        from azure.batch import models

        _check_blob_url(self.container_url, "OutputFile.container_url")
        reference = models.BatchNodeIdentityReference(resource_id=identity) if identity else None
        return models.OutputFile(
            file_pattern=self.pattern,
            destination=models.OutputFileDestination(
                container=models.OutputFileBlobContainerDestination(
                    container_url=self.container_url, path=self.path or None, identity_reference=reference
                )
            ),
            upload_options=models.OutputFileUploadConfiguration(upload_condition=f"task{self.when}"),
        )


@dataclass
class TaskSpecification:
    """One Batch task: inputs to download, a command with its environment, outputs to upload.

    Args:
        task_id: Batch task id (letters, digits, ``-``, ``_``; at most 64).
        command: the program and its arguments (run without a shell; wrap in
            ``["/bin/bash", "-c", "..."]`` for one).
        env: environment variables. Batch shows them to whoever may read the
            task, so a secret here is safe from ``ps`` on the node, not from
            the account's readers.
        inputs, outputs: see :class:`InputFile`, :class:`OutputFile`.
        max_wall_clock_s: Batch ends the task after this many seconds (None: no limit).
        display_name: what the Azure portal shows.

    Example:
        >>> spec = TaskSpecification("t1", ["echo", "hello world"])
        >>> spec.command_line
        "echo 'hello world'"
        >>> TaskSpecification.from_batch(spec.to_batch().as_dict()).command
        ['echo', 'hello world']
    """

    task_id: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    inputs: list[InputFile] = field(default_factory=list)
    outputs: list[OutputFile] = field(default_factory=list)
    max_wall_clock_s: int | None = None
    display_name: str | None = None

    def __post_init__(self) -> None:
        if not _TASK_ID.match(self.task_id):
            raise InputError(
                f"task id {self.task_id!r}", "is not a Batch task id", "use 1-64 letters, digits, '-' or '_'"
            )
        if not self.command:
            raise InputError(f"task {self.task_id}", "the command is empty", "give the program to run")

    @property
    def command_line(self) -> str:
        """The command as Batch's one-line ``commandLine`` (quoted like a POSIX shell)."""
        return shlex.join(str(part) for part in self.command)

    def to_batch(self, identity: str | None = None) -> Any:
        """The azure-batch ``BatchTaskCreateOptions`` (``identity``: managed identity for Blob)."""
        from azure.batch import models

        constraints = None
        if self.max_wall_clock_s is not None:
            constraints = models.BatchTaskConstraints(
                max_wall_clock_time=timedelta(seconds=int(self.max_wall_clock_s)), max_task_retry_count=0
            )
        return models.BatchTaskCreateOptions(
            id=self.task_id,
            display_name=self.display_name,
            command_line=self.command_line,
            environment_settings=[models.EnvironmentSetting(name=k, value=str(v)) for k, v in self.env.items()],
            resource_files=[item.to_batch(identity) for item in self.inputs] or None,
            output_files=[item.to_batch(identity) for item in self.outputs] or None,
            constraints=constraints,
        )

    @classmethod
    def from_batch(cls, task: dict[str, Any]) -> TaskSpecification:
        """Read a task back from Batch's REST JSON (what the local dispatcher and the test double run).

        A ``ResourceFile`` with ``httpUrl`` becomes an input whose blob is the URL's last path part.
        """
        inputs = []
        for item in task.get("resourceFiles") or []:
            if item.get("storageContainerUrl"):
                inputs.append(InputFile(item["storageContainerUrl"], item.get("blobPrefix") or "", item.get("filePath") or ""))
            elif item.get("httpUrl"):
                url = item["httpUrl"]
                base, _, blob = _without_query(url).rpartition("/")
                inputs.append(InputFile(base + _query(url), blob, item.get("filePath") or blob))
        outputs = []
        for item in task.get("outputFiles") or []:
            container = (item.get("destination") or {}).get("container") or {}
            condition = ((item.get("uploadOptions") or {}).get("uploadCondition") or "taskcompletion").lower()
            outputs.append(
                OutputFile(item["filePattern"], container.get("containerUrl", ""), container.get("path") or "",
                           condition.removeprefix("task"))
            )
        limit = (task.get("constraints") or {}).get("maxWallClockTime")
        return cls(
            task_id=task["id"],
            command=shlex.split(task["commandLine"]),
            env={s["name"]: s.get("value") or "" for s in task.get("environmentSettings") or []},
            inputs=inputs,
            outputs=outputs,
            max_wall_clock_s=_iso_seconds(limit) if limit else None,
            display_name=task.get("displayName"),
        )


def _check_blob_url(url: str, what: str) -> None:
    if not url.startswith(("https://", "http://")):
        raise InputError(
            f"{what} {_without_query(url)!r}",
            "Azure Batch can only download from and upload to Blob containers over HTTP(S)",
            "give https://ACCOUNT.blob.core.windows.net/CONTAINER (fsspec URLs work with the local dispatcher only)",
        )


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def _query(url: str) -> str:
    return "?" + url.split("?", 1)[1] if "?" in url else ""


_ISO_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?$")


def _iso_seconds(text: str) -> int:
    """Seconds in an ISO 8601 duration as Batch writes them (``PT1H30M``, ``P1DT2H``)."""
    match = _ISO_DURATION.match(text)
    if not match:
        raise InputError(f"maxWallClockTime {text!r}", "is not an ISO 8601 duration", "write e.g. PT1H")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return int(days * 86400 + hours * 3600 + minutes * 60 + seconds)


__all__ = ["InputFile", "OutputFile", "TaskSpecification", "UPLOAD_WHEN"]
