"""What the pages say about a session's job: "queued (Resources)", "starting on vm", time left.

The session's own state (queued, starting, ready, ...) is the gateway's; the
job's (pending reason, node, end of its time limit) comes from the backend's
latest :class:`~prefect_hpcviz.viz.backends.JobStatus`. :func:`describe`
merges them into the fields the status API adds for the waiting page and
for the open app's page (its end notice, see end_notice.py). A session ends
at the earlier of its job's time limit and the gateway's maximum session
lifetime (:func:`session_end`).

Example:
    >>> from prefect_hpcviz.viz.backends import JobState, JobStatus
    >>> describe("queued", JobStatus(JobState.QUEUED, reason="Resources"), now=0)["phase"]
    'queued (Resources)'
    >>> describe("starting", JobStatus(JobState.RUNNING, node="vm"), now=0)["phase"]
    'starting on vm'
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect_hpcviz.viz.backends import JobState, JobStatus

WARN_BEFORE_S = 600.0
"""A ready session's status carries a ``warning`` this long before it ends."""
STOP_BEFORE_S = 30.0
"""The gateway stops the session this long before the time limit, so it ends cleanly, not killed."""


JOB_TIME_LIMIT = "the job's time limit"
MAX_LIFETIME = "the gateway's maximum session lifetime"


def session_end(job: JobStatus | None, lifetime_ends_at: float | None) -> tuple[float, str] | None:
    """When a session ends and why: the earlier of its job's time limit and its maximum lifetime.

    ``lifetime_ends_at`` is the session's launch plus the gateway's ``max_lifetime_s``
    (None: no such limit). Returns ``(epoch seconds, because)`` or None for no end.

    Example:
        >>> from prefect_hpcviz.viz.backends import JobState, JobStatus
        >>> session_end(JobStatus(JobState.RUNNING, ends_at=500.0), lifetime_ends_at=300.0)
        (300.0, "the gateway's maximum session lifetime")
        >>> session_end(None, None) is None
        True
    """
    ends = []
    if job is not None and job.ends_at is not None:
        ends.append((job.ends_at, JOB_TIME_LIMIT))
    if lifetime_ends_at is not None:
        ends.append((lifetime_ends_at, MAX_LIFETIME))
    return min(ends, default=None)


def describe(
    state: str, job: JobStatus | None, *, now: float, lifetime_ends_at: float | None = None
) -> dict[str, Any]:
    """Status fields for a session in ``state`` whose job last reported ``job``.

    Returns ``phase`` (the session's state, with the scheduler's reason or the node), plus,
    for a session that ends (:func:`session_end`), ``ends_at`` (ISO 8601, UTC), ``ends_in_s``,
    ``ends_because`` and, in its last :data:`WARN_BEFORE_S`, a ``warning``.

    Example:
        >>> describe("ready", None, now=0, lifetime_ends_at=240)["warning"]
        "This session ends in 4 min (the gateway's maximum session lifetime). Save what you need."
    """
    out: dict[str, Any] = {}
    if job is not None and state == "queued" and job.state is JobState.QUEUED and job.reason:
        out["phase"] = f"queued ({job.reason})"
    elif job is not None and state == "starting" and job.node:
        out["phase"] = f"starting on {job.node}"
    end = session_end(job, lifetime_ends_at)
    if end is not None and state in ("starting", "ready"):
        ends_at, because = end
        left = max(0.0, ends_at - now)
        out["ends_at"] = dt.datetime.fromtimestamp(ends_at, dt.timezone.utc).isoformat().replace("+00:00", "Z")
        out["ends_in_s"] = round(left)
        out["ends_because"] = because
        if state == "ready" and left <= WARN_BEFORE_S:
            out["warning"] = f"This session ends in {_minutes(left)} ({because}). Save what you need."
    return out


def time_limit_reason(ends_at: float) -> str:
    """Why a session was stopped at its job's time limit (the page shows it).

    Example:
        >>> time_limit_reason(0)
        'stopped at the time limit of its job (walltime, 00:00 UTC); start again to continue'
    """
    at = dt.datetime.fromtimestamp(ends_at, dt.timezone.utc).strftime("%H:%M UTC")
    return f"stopped at the time limit of its job (walltime, {at}); start again to continue"


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{round(seconds)} s"
    return f"{round(seconds / 60)} min"
