"""What every backend speaks: job specs, job states and the four calls.

A backend starts one viz server job and answers four questions about it:
``submit(spec) -> job id``, ``state(job id)``, ``stop(job id)`` and
``logs(job id)``. A new place to run jobs (Slurm, Azure Batch) is one module
with one class that implements them; the gateway never needs to know more.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class JobState(str, enum.Enum):
    """Where a job is in its life: queued -> starting -> running -> done | failed."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        """True for ``done`` and ``failed``: the job will not run again."""
        return self in (JobState.DONE, JobState.FAILED)


@dataclass
class JobStatus:
    """A job's state, why it is there (for failures; a scheduler's pending
    reason while queued), the node it runs on, and when the scheduler will
    end it (its time limit, epoch seconds; None: no limit).

    Example:
        >>> JobStatus(JobState.FAILED, reason="exit code 2").state.ended
        True
    """

    state: JobState
    reason: str = ""
    node: str | None = None
    ends_at: float | None = None


@dataclass
class JobSpec:
    """One viz server job: what to run, with which environment, where.

    Secrets travel in ``env`` only, never in ``command``: a command line is
    visible to every user of the node (``ps``), the environment is not.

    ``assignment`` is set only when ``command`` is the standard
    ``python -m prefect_hpcviz.viz.serve ARGS`` line: ``{"app": APP, "argv":
    ARGS}``. A backend that keeps pre-started standby servers
    (``serve --standby``) may hand it to one of them instead of running
    ``command``; any other backend ignores it.

    Example:
        >>> spec = JobSpec("viz-abc", ["python", "-m", "http.server", "0"],
        ...                env={"HPCVIZ_SESSION_KEY": "k"}, workdir=Path("/tmp"))
        >>> spec.command[0]
        'python'
    """

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path = field(default_factory=Path.cwd)
    assignment: dict[str, Any] | None = None


@runtime_checkable
class Backend(Protocol):
    """Starts, watches and stops viz server jobs somewhere.

    Example:
        >>> from prefect_hpcviz.viz.backends import get_backend
        >>> isinstance(get_backend("local", {}), Backend)
        True
    """

    async def submit(self, spec: JobSpec) -> str:
        """Start the job; return an id that stays valid across gateway restarts."""
        ...

    async def state(self, job_id: str) -> JobStatus:
        """Where the job is now."""
        ...

    async def stop(self, job_id: str) -> None:
        """Stop the job (graceful first); a job that already ended is fine."""
        ...

    async def logs(self, job_id: str, tail: int = 100) -> str:
        """The last ``tail`` lines of the job's combined stdout and stderr."""
        ...


# Optional, beyond the four calls: a backend that can enumerate its jobs
# defines ``async def list_jobs(self) -> dict[str, JobStatus]``: every job it
# started (id -> status) that has not ended. The gateway's reaper uses it to
# stop jobs its registry forgot; a backend without it is simply not reaped.
