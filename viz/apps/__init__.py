"""trame apps, each runnable alone and by ``viz/serve.py`` under a name.

An app module exposes ``create_app(data_path, server=None)`` returning an
object with ``.server`` (a trame server, not started). Modules are imported
only when asked for, so listing apps does not import trame or VTK.

Example:
    >>> sorted(APPS)
    ['explorer']
    >>> app = get_app_factory("explorer")("out/reduced/3f2a9c0d41b7e8aa")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from prefect_hpcviz.viz.errors import InputError

APPS: dict[str, str] = {
    "explorer": "prefect_hpcviz.viz.apps.explorer",
}
"""App name -> module holding its ``create_app``."""


def get_app_factory(name: str) -> Callable[..., Any]:
    """The ``create_app(data_path, server=None)`` of the app called ``name``.

    Raises:
        InputError: no app has that name (the message lists the names).

    Example:
        >>> create_app = get_app_factory("explorer")
    """
    module = APPS.get(name)
    if module is None:
        raise InputError(f"app {name!r}", "no such app", f"use one of: {', '.join(sorted(APPS))}")
    return importlib.import_module(module).create_app
