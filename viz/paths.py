"""Where hpcviz keeps its own files when nobody says otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def hpcviz_home() -> Path:
    """``$HPCVIZ_HOME``, or ``~/.hpcviz``: reduced data, gateway state, demo data.

    Example:
        >>> hpcviz_home() / "reduced"
        PosixPath('/home/me/.hpcviz/reduced')
    """
    return Path(os.environ.get("HPCVIZ_HOME") or Path.home() / ".hpcviz").expanduser()
