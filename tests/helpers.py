"""Small helpers the tests share: a free loopback port; does a screenshot show a rendered scene.

Imported as ``from tests.helpers import ...`` (pytest runs from the
repository root, like ``from tests.conftest import require``).

Example:
    >>> from tests.helpers import free_port, is_rendered
    >>> server = LocalPrefectServer(home, port=free_port())
    >>> assert is_rendered(page.locator("#hpcviz-view").screenshot())
"""

from __future__ import annotations

import io
import socket

import numpy as np
from PIL import Image


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it).

    Example:
        >>> gateway = GatewayProcess(free_port(), tmp_path / "state", tmp_path / "gateway.log")
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pixels(png: bytes) -> np.ndarray:
    """A PNG's RGB pixels as float32 (height, width, 3), for differences and statistics.

    Example:
        >>> np.abs(pixels(after) - pixels(before)).mean() > 0.5
        True
    """
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def is_rendered(png: bytes) -> bool:
    """A rendered scene: real contrast and many distinct colours, not a flat fill.

    Example:
        >>> is_rendered(page.locator("#hpcviz-view").screenshot())
        True
    """
    image = pixels(png)
    distinct = len(np.unique(image.reshape(-1, 3).astype(np.uint8), axis=0))
    return float(image.std()) > 10 and distinct > 50
