"""Where viz server jobs run: local processes, Slurm batch jobs, Azure Batch tasks.

A backend answers four questions about one job (see :class:`Backend`)::

    import sys
    from prefect_hpcviz.viz.backends import JobSpec, get_backend

    backend = get_backend("local", {"workdir": "/tmp/viz-jobs"})
    job_id = await backend.submit(JobSpec("viz-1", [sys.executable, "-m", "http.server", "0"]))
    print((await backend.state(job_id)).state)    # JobState.RUNNING
    await backend.stop(job_id)

A new backend is a class with ``submit/state/stop/logs`` in
``viz/backends/<kind>.py`` plus one line in ``_BACKENDS`` below; shell-outs go
through :func:`~prefect_hpcviz.viz.backends.commands.run_command`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from prefect_hpcviz.viz.backends.base import Backend, JobSpec, JobState, JobStatus
from prefect_hpcviz.viz.backends.commands import CommandError, CommandResult, run_command
from prefect_hpcviz.viz.backends.local import LocalBackend
from prefect_hpcviz.viz.errors import InputError

# kind -> "module:Class"; imported on first use so optional SDKs stay optional.
_BACKENDS: dict[str, str] = {
    "local": "prefect_hpcviz.viz.backends.local:LocalBackend",
    "slurm": "prefect_hpcviz.viz.backends.slurm:SlurmBackend",
    "azure_batch": "prefect_hpcviz.viz.backends.azure_batch:AzureBatchBackend",
}


def backend_kinds() -> list[str]:
    """The backend kinds :func:`get_backend` knows.

    Example:
        >>> "local" in backend_kinds()
        True
    """
    return sorted(_BACKENDS)


def register_backend(kind: str, target: str) -> None:
    """Make ``get_backend(kind, ...)`` build ``target`` ("package.module:Class").

    Example:
        >>> register_backend("local2", "prefect_hpcviz.viz.backends.local:LocalBackend")
        >>> "local2" in backend_kinds()
        True
    """
    _BACKENDS[kind] = target


def backend_class(kind: str) -> type:
    """The class behind ``kind``; InputError naming the known kinds otherwise."""
    target = _BACKENDS.get(kind)
    if target is None:
        raise InputError(
            f"launcher kind {kind!r}", "unknown backend", f"use one of: {', '.join(backend_kinds())}"
        )
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_backend(kind: str, options: dict[str, Any] | None = None) -> Backend:
    """Build the backend ``kind`` with ``options`` as keyword arguments.

    Args:
        kind: "local" (more kinds register themselves in ``_BACKENDS``).
        options: the backend's constructor keywords, e.g. ``{"workdir": "/scratch/viz"}``.

    Raises:
        InputError: unknown kind or option, naming what is allowed.

    Example:
        >>> get_backend("local", {"grace_s": 2}).grace_s
        2.0
    """
    cls = backend_class(kind)
    options = dict(options or {})
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [
        name for name in params if name != "self" and params[name].kind is not inspect.Parameter.VAR_KEYWORD
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown and not accepts_any:
        raise InputError(
            f"launcher options for {kind!r}",
            f"unknown option(s) {', '.join(unknown)}",
            f"use only: {', '.join(allowed) or 'no options'}",
        )
    try:
        return cls(**options)
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InputError(f"launcher options for {kind!r}", str(exc), "check the option values") from exc


__all__ = [
    "Backend",
    "CommandError",
    "CommandResult",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LocalBackend",
    "backend_kinds",
    "backend_class",
    "get_backend",
    "register_backend",
    "run_command",
]
