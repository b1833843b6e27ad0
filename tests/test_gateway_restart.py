"""Kill the gateway process mid-session: the open 3D view comes back and works.

A real ``hpcviz gateway`` process serves the explorer (a real trame viz
server, launched on click through the local backend) to real Chromium. The
gateway is killed with SIGKILL while the page is open, then started again on
the same port and state folder: the link still opens, the session (the same
viz server process) is still there, the page reconnects by itself and moving
the time slider changes the time label and the rendered picture.

trame's own client does not get the page back here: it retries only when the
page address carries ``?reconnect=auto``, ten times half a second apart, and
to a lower-cased copy of the websocket URL that no longer matches the
session's path. The gateway adds a small script to the app's page
(viz/gateway/reconnect.py) that waits for the gateway and reloads.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pytest

from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayClient
from prefect_hpcviz.viz.gateway.reconnect import inject_script
from tests.helpers import free_port, is_rendered, pixels
from tests.test_gateway import Browser, echo_launcher, process_alive

VIEW_READY = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"


def eventually(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} not met within {timeout:.0f} s"
        time.sleep(0.1)
    return value


def rendered_shot(view) -> bytes | None:
    """A screenshot of the view once it shows a rendered scene, else None."""
    png = view.screenshot()
    return png if is_rendered(png) else None


def settled_shot(view, timeout: float = 30) -> bytes:
    """The view's picture once it is rendered and the same in two screenshots half a second apart."""
    shots = [b""]

    def same_twice() -> bytes | None:
        time.sleep(0.5)  # the interval compared, not a readiness wait: the loop polls the picture
        png = rendered_shot(view)
        stable = png is not None and png == shots[-1]
        shots.append(png or b"")
        return png if stable else None

    return eventually(same_twice, timeout, "a rendered picture that stays the same")


def moving_the_slider_changes_the_picture(page, before: bytes, timeout: float = 30) -> bool:
    """Step the time slider once (between steps 2 and 3): the time label, then the picture change.

    The label changing says the server answered. One move is enough for the
    picture: the explorer delivers every frame (``_deliver_every_frame`` in
    viz/apps/explorer.py), so the new step shows without another interaction;
    ``timeout`` only bounds a slow render on a busy machine.
    """
    view, label = page.locator("#hpcviz-view"), page.locator("#hpcviz-time-label")
    was = label.inner_text()
    page.locator("[data-testid=time-slider] .v-slider-thumb").first.focus()
    page.keyboard.press("ArrowRight" if "(2/3)" in was else "ArrowLeft")
    eventually(lambda: label.inner_text() != was, 20, "the time label follows the slider")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        png = rendered_shot(view)
        if png is not None and np.abs(pixels(png) - pixels(before)).mean() > 0.1:
            return True
        time.sleep(0.2)  # poll interval of a condition with a deadline
    return False


class GatewayProcess:
    """``hpcviz gateway`` as a child process on a fixed port and state folder."""

    def __init__(self, port: int, state_dir: Path, log: Path) -> None:
        self.port, self.state_dir, self.log = port, state_dir, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "GatewayProcess":
        hpcviz = Path(sys.executable).with_name("hpcviz")
        command = [str(hpcviz)] if hpcviz.exists() else [sys.executable, "-m", "prefect_hpcviz.cli.main"]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [*command, "gateway", "--port", str(self.port), "--state-dir", str(self.state_dir),
                 "--idle-timeout", "600", "--launch-timeout", "120"],  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        eventually(self._healthy, 60, f"the gateway answers /healthz (log: {self.log})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/healthz", trust_env=False, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> GatewayClient:
        return GatewayClient(self.url, (self.state_dir / "admin_token").read_text())


@pytest.mark.browser
def test_a_killed_and_restarted_gateway_gives_the_open_view_back(chromium_browser, small_simulation, tmp_path):
    gateway = GatewayProcess(free_port(), tmp_path / "state", tmp_path / "gateway.log").start()
    context = chromium_browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        reg = gateway.client().register(str(small_simulation), title="restart test")
        page = context.new_page()
        page.goto(reg.link)
        page.wait_for_function(VIEW_READY, timeout=120_000)
        view, label = page.locator("#hpcviz-view"), page.locator("#hpcviz-time-label")
        page.locator("[data-testid=time-slider] .v-slider-thumb").first.focus()
        page.keyboard.press("ArrowRight")  # a state of the session worth keeping: step 2
        eventually(lambda: "(2/3)" in label.inner_text(), 20, "the view moves to step 2")
        session = gateway.client().get(reg.id)["session"]
        assert session["state"] == "ready"
        page.evaluate("window.hpcvizBeforeRestart = true")  # gone once the page has reloaded

        gateway.kill()
        eventually(lambda: page.evaluate("window.hpcvizReconnect") == "waiting", 20, "the page notices the drop")
        assert process_alive(session["job_id"]), "the viz server outlives the gateway"
        gateway.start()

        # Routes, links and sessions come back: the same session, the old link still opens.
        assert gateway.client().get(reg.id)["session"]["id"] == session["id"]
        link = httpx.get(reg.link, trust_env=False, follow_redirects=False)
        assert link.status_code == 303 and link.headers["location"] == f"/s/{reg.id}/"
        # The page came back by itself, on the server's state (still step 2), and renders.
        page.wait_for_function(f"() => !window.hpcvizBeforeRestart && ({VIEW_READY})()", timeout=60_000)
        eventually(lambda: "(2/3)" in label.inner_text(), 30, "the time label of the kept state")
        before = settled_shot(view)

        assert moving_the_slider_changes_the_picture(page, before), "the view does not render after the restart"
        assert gateway.client().get(reg.id)["session"]["id"] == session["id"]

        # A session the gateway stops on purpose (idle, operator) is not reloaded into a new server.
        stopped = httpx.post(
            f"{gateway.url}/api/sessions/{session['id']}/stop",
            headers={"Authorization": f"Bearer {(gateway.state_dir / 'admin_token').read_text()}"},
            trust_env=False,
        )
        assert stopped.json()["state"] == "stopped"
        decision = eventually(
            lambda: (d := page.evaluate("window.hpcvizReconnect")) and d.startswith("not reloading") and d,
            30,
            "the page decides not to reload",
        )
        assert "stopped" in decision or "ended" in decision
        assert gateway.client().get(reg.id)["session"]["id"] == session["id"]  # nothing relaunched
        assert not process_alive(session["job_id"])
    finally:
        context.close()
        gateway.stop()


def test_the_reconnect_script_goes_first_into_the_pages_head():
    src = "__hpcviz__/reconnect.js"
    page = b'<!DOCTYPE html><html><HEAD lang="en"><script type="module" src="app.js"></script></HEAD></html>'
    assert inject_script(page, src).startswith(
        b'<!DOCTYPE html><html><HEAD lang="en"><script src="__hpcviz__/reconnect.js"></script><script type="module"'
    )
    assert inject_script(b"<p>no head</p>", src) == b'<script src="__hpcviz__/reconnect.js"></script><p>no head</p>'


def test_the_reconnect_script_is_served_only_with_the_links_cookie():
    with EmbeddedGateway() as gw:
        reg = gw.client().register("/d")
        browser = Browser(gw)
        path = f"/s/{reg.id}/__hpcviz__/reconnect.js"
        assert browser.get(path, page=False).status_code == 403
        browser.open(reg.link)
        script = browser.get(path, page=False)
        assert script.status_code == 200 and script.headers["content-type"].startswith("application/javascript")
        assert "window.location.reload()" in script.text and 'new URL("status"' in script.text


def test_a_gateway_that_shuts_down_tells_open_websockets_it_restarts(tmp_path):
    gw = EmbeddedGateway(state_dir=tmp_path, launch_timeout_s=20).start()
    reg = gw.client().register("/d", launcher=echo_launcher(), warm=True)
    gw.client().wait_ready(reg.id, timeout=20)
    browser = Browser(gw)
    browser.open(reg.link)

    async def open_socket_through_a_shutdown() -> aiohttp.WSMessage:
        async with aiohttp.ClientSession(headers={"Cookie": browser.cookie}) as http:
            async with http.ws_connect(f"{gw.local_url}/s/{reg.id}/ws") as ws:
                await ws.send_str("hello")
                assert (await ws.receive()).data == "hello"
                stopping = asyncio.get_running_loop().run_in_executor(None, lambda: gw.stop(stop_sessions=False))
                closing = await asyncio.wait_for(ws.receive(), 20)
                await stopping
                return closing

    # In a thread of its own: a module with the (sync) Chromium fixture has a running loop in this one.
    with ThreadPoolExecutor(1) as pool:
        closing = pool.submit(asyncio.run, open_socket_through_a_shutdown()).result(60)
    # 1012 "service restart": the page's reconnect script waits for the gateway and reloads.
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1012)
    with EmbeddedGateway(state_dir=tmp_path) as again:
        again.client().revoke(reg.id)
