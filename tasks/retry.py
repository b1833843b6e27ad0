"""When a retry can help."""

from __future__ import annotations

from typing import Any

from prefect_hpcviz.viz.errors import InputError


def unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures (I/O, a lost worker), never bad input.

    Bad input fails the same way every time, so retrying only delays the
    message the user needs to read.
    """
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return True
