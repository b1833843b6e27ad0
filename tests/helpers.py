"""Small helpers the tests share: a free loopback port, polling with a deadline, screenshots, docs' code.

Imported as ``from tests.helpers import ...`` (pytest runs from the
repository root, like ``from tests.conftest import require``).

Example:
    >>> from tests.helpers import free_port, is_rendered
    >>> server = LocalPrefectServer(home, port=free_port())
    >>> assert is_rendered(page.locator("#hpcviz-view").screenshot())
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
from aiohttp import web
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


def wait_until(condition, timeout: float, what: str):
    """Poll ``condition()`` until it returns something truthy (returned); AssertionError after ``timeout`` s.

    Example:
        >>> wait_until(lambda: thumbnails.count() == 3, 60, "three gallery thumbnails")
        True
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # poll interval of a condition with a deadline
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


DOCS = Path(__file__).resolve().parents[1] / "docs"
DOC_IMAGES = DOCS / "images"


def doc_block(doc: Path, first_line: str) -> str:
    """A fenced code block of a doc as printed: from its ``first_line`` up to the closing fence.

    Example:
        >>> doc_block(DOCS / "gateway.md", "# /etc/nginx/conf.d/hpcviz.conf").splitlines()[1]
        "map $http_upgrade $connection_upgrade { default upgrade; '' ''; }"
    """
    text = doc.read_text()
    start = text.index(first_line)
    return text[start : text.index("```", start)]


def keep_picture(png: bytes, name: str, tmp_path: Path) -> None:
    """Save a screenshot in the test's folder, and as the README's picture when ``HPCVIZ_SCREENSHOTS=docs``.

    Example:
        >>> keep_picture(page.screenshot(), "canned-gallery.png", tmp_path)
    """
    (tmp_path / name).write_bytes(png)
    if os.environ.get("HPCVIZ_SCREENSHOTS") == "docs":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, DOC_IMAGES / name)


def click_link(context, page, link):
    """Click a Playwright ``link``; the page it shows (a new tab when the link has ``target=_blank``).

    Example:
        >>> app = click_link(context, page, page.locator(f'a[href="{link}"]').first)
    """
    if link.get_attribute("target") == "_blank":
        with context.expect_page() as opened:
            link.click()
        return opened.value
    link.click()
    return page


async def oauth2_proxy_stand_in() -> tuple[web.AppRunner, int]:
    """oauth2-proxy's contract with a login proxy in front, on a free port; ``(runner, port)``.

    ``/oauth2/auth``: 202 with ``X-Auth-Request-User`` for a browser with a
    ``login=<user>`` cookie, else 401; ``/oauth2/sign_in?rd=URL``: the sign-in page (naming ``rd``);
    ``/oauth2/headers``: the request's headers as JSON, to see what the proxy passes on.

    Example:
        >>> runner, port = await oauth2_proxy_stand_in()
        >>> await runner.cleanup()
    """

    async def auth(request: web.Request) -> web.Response:
        user = request.cookies.get("login")
        return web.Response(status=202, headers={"X-Auth-Request-User": user}) if user else web.Response(status=401)

    async def sign_in(request: web.Request) -> web.Response:
        return web.Response(text=f"sign in with your institution, then back to {request.query.get('rd', '/')}")

    async def headers(request: web.Request) -> web.Response:
        return web.json_response([[name, value] for name, value in request.headers.items()])

    app = web.Application()
    app.router.add_get("/oauth2/auth", auth)
    app.router.add_get("/oauth2/sign_in", sign_in)
    app.router.add_get("/oauth2/headers", headers)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def self_signed_certificate(folder: Path, host: str) -> tuple[Path, Path]:
    """A one-day certificate for ``host`` (CN and subjectAltName) and its key, written to ``folder``.

    Example:
        >>> cert, key = self_signed_certificate(tmp_path, "viz.example.org")
    """
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=DNS:{host}", "-keyout", str(key), "-out", str(cert)],  # fmt: skip
        check=True,
        capture_output=True,
    )
    return cert, key


async def wait_ready_through(http, app_url: str, headers: dict) -> dict:
    """Long-poll ``{app_url}__hpcviz__/status`` (as the waiting page does) until ready; the last status."""
    state = ""
    while state != "ready":
        async with http.get(f"{app_url}__hpcviz__/status?since={state}&wait=10", headers=headers) as r:
            status = await r.json()
        state = status["state"]
        assert state in ("queued", "starting", "ready"), status
    return status


async def assert_websockets_through(http, ws_url: str, origin: str, headers: dict) -> None:
    """A 5 MiB message comes back intact from ``origin``; a page of another site gets 403."""
    import aiohttp
    import pytest

    message = os.urandom(5 * 1024 * 1024)
    async with http.ws_connect(ws_url, origin=origin, headers=headers, max_msg_size=0) as ws:
        await ws.send_bytes(message)
        assert await ws.receive_bytes(timeout=30) == message
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with http.ws_connect(ws_url, origin="https://evil.example.com", headers=headers):
            pass
    assert refused.value.status == 403
