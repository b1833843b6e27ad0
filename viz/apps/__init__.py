"""trame apps, each runnable alone and by ``viz/serve.py`` under a name.

An app module exposes ``create_app(data_path, server=None)`` returning an
object with ``.server`` (a trame server, not started). Modules are imported
only when asked for, so listing apps does not import trame or VTK.

An app module may also expose ``prepare() -> dict``: the work that does not
depend on the data (an offscreen render window, say), done ahead of time by a
standby server (``serve --standby``); the dict is passed to ``create_app`` as
keyword arguments.

Example:
    >>> sorted(APPS)
    ['explorer', 'first-look']
    >>> app = get_app_factory("explorer")("out/reduced/3f2a9c0d41b7e8aa")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from prefect_hpcviz.viz.errors import InputError

APPS: dict[str, str] = {
    "explorer": "prefect_hpcviz.viz.apps.explorer",
    "first-look": "prefect_hpcviz.viz.apps.first_look",
}
"""App name -> module holding its ``create_app``."""


def get_app_factory(name: str) -> Callable[..., Any]:
    """The ``create_app(data_path, server=None)`` of the app called ``name``.

    Raises:
        InputError: no app has that name (the message lists the names).

    Example:
        >>> create_app = get_app_factory("explorer")
    """
    return get_app_module(name).create_app


def get_app_module(name: str) -> Any:
    """The module of the app called ``name`` (imported now: trame, VTK, ...).

    Raises:
        InputError: no app has that name (the message lists the names).

    Example:
        >>> hasattr(get_app_module("explorer"), "prepare")
        True
    """
    module = APPS.get(name)
    if module is None:
        raise InputError(f"app {name!r}", "no such app", f"use one of: {', '.join(sorted(APPS))}")
    return importlib.import_module(module)
