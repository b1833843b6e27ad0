"""A Prefect progress artifact that follows a running reduction.

The engine (``viz/``, which never imports Prefect) calls ``progress(done,
total)`` each time an output task finishes; this turns those calls into one
progress artifact per reduction, updated while it runs. Updates are sent at
most every ``min_interval`` seconds, and always for the last output.

Example:
    >>> progress = ReductionProgress("run/ocean.zarr")                       # doctest: +SKIP
    >>> engine.reduce_dataset(source, recipe, out, progress=progress)        # doctest: +SKIP
    >>> progress.percent                                                      # doctest: +SKIP
    100.0
"""

from __future__ import annotations

import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact


class ReductionProgress:
    """``progress(done, total)`` callback publishing a Prefect progress artifact."""

    def __init__(self, source: str, *, min_interval: float = 0.5) -> None:
        self.source = source
        self.min_interval = min_interval
        self.artifact_id: UUID | None = None
        self.percent = 0.0
        self._sent_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        self.percent = 100.0 * done / total if total else 100.0
        description = f"Reducing {self.source}: {done} of {total} outputs written"
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(self.percent, description=description)
            self._sent_at = time.monotonic()
            return
        now = time.monotonic()
        if done == total or now - self._sent_at >= self.min_interval:
            update_progress_artifact(self.artifact_id, self.percent, description=description)
            self._sent_at = now


__all__ = ["ReductionProgress"]
