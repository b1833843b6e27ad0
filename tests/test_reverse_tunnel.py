"""Reverse mode: viz servers on nodes that accept no inbound connection dial the gateway.

The gateways here refuse every directly reported host (``allowed_backend_hosts``
matches nothing a server could report), so a session that works got there
through the reverse connection: the port the proxy uses is one the gateway's own
process listens on, not the server's. Local launcher with the echo stand-in
(HTTP, a >4 MiB websocket round trip, wrong keys, a dropped tunnel, stop) and
with the real explorer in Chromium; the same end to end with the Slurm launcher.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import psutil
import pytest

from prefect_hpcviz.viz.errors import LaunchError
from prefect_hpcviz.viz.gateway import EmbeddedGateway
from tests.helpers import free_port, is_rendered

ECHO = Path(__file__).parent / "apps" / "echo_server.py"
NO_DIRECT_REPORTS = r"^reverse-mode-only\.invalid$"  # no server can report a host matching this
VIEW_IMAGE_READY = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"


def echo_launcher(*extra: str, kind: str = "local", reverse: bool = True, **options) -> dict:
    """The echo stand-in as a site's own command, dialing the gateway (``--reverse``)."""
    command = ["{python}", str(ECHO), "--report-url", "{report_url}", "--data", "{data}",
               "--idle-timeout", "{idle_timeout}"]  # fmt: skip
    if reverse:
        command.append("--reverse")
    return {"kind": kind, "options": {"command": [*command, *extra], "reverse": reverse, **options}}


def run_async(coro):
    """Run a coroutine to the end in a thread of its own (Playwright's sync API may own this one's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.05)
    return result


def listening_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def job_pid(job_id: str) -> int:
    return int(job_id.split(".")[0])


class Tab:
    """A browser tab holding the link's cookie: pages, the status, and websockets through the gateway."""

    def __init__(self, gateway: EmbeddedGateway, link: str) -> None:
        self.gateway = gateway
        self.http = httpx.Client(base_url=gateway.local_url, trust_env=False, timeout=60)
        opened = self.http.get(link[len(gateway.url):], headers={"Accept": "text/html"})
        assert opened.status_code == 303, opened.text
        self.cookie = opened.headers["set-cookie"].split(";")[0]
        self.base = opened.headers["location"]

    def get(self, path: str = "", *, page: bool = False) -> httpx.Response:
        accept = "text/html" if page else "application/json"
        return self.http.get(self.base + path, headers={"Cookie": self.cookie, "Accept": accept})

    def post(self, path: str) -> httpx.Response:
        return self.http.post(self.base + path, headers={"Cookie": self.cookie, "Accept": "text/html"})

    def status(self) -> dict:
        return self.get("__hpcviz__/status").json()

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        status = self.status()
        while not predicate(status):
            left = deadline - time.monotonic()
            assert left > 0, f"{what} not met within {timeout} s; last status {status}"
            query = {"since": status["state"], "phase": status["phase"], "wait": min(5, left)}
            status = self.http.get(
                self.base + "__hpcviz__/status", params=query, headers={"Cookie": self.cookie}
            ).json()
        return status

    def websocket_round_trip(self, payload: bytes) -> bytes:
        url = f"{self.gateway.local_url}{self.base}ws"

        async def echo() -> bytes:
            async with aiohttp.ClientSession(headers={"Cookie": self.cookie}) as http:
                async with http.ws_connect(url, max_msg_size=64 * 1024 * 1024, origin=self.gateway.url) as ws:
                    await ws.send_str("hello")
                    assert (await ws.receive(timeout=30)).data == "hello"
                    await ws.send_bytes(payload)
                    return (await ws.receive(timeout=60)).data

        return run_async(echo())


def tunnel_handshake(gateway: EmbeddedGateway, session_id: str, key: str | None) -> int:
    """The HTTP status the gateway answers a control-websocket dial with (101: accepted)."""
    url = f"{gateway.local_url}/api/sessions/{session_id}/tunnel"
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}

    async def dial() -> int:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(url, headers=headers):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    return run_async(dial())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    state = tmp_path_factory.mktemp("gateway")
    # A slow culler: only the reverse connection itself may notice a server going away.
    with EmbeddedGateway(
        state_dir=state, allowed_backend_hosts=NO_DIRECT_REPORTS, launch_timeout_s=120, poll_interval_s=60
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway):
    with gateway.client() as c:
        yield c


# ------------------------------------------------------------------- local
def test_a_direct_report_is_refused_here_so_only_the_reverse_connection_can_serve(gateway, client):
    reg = client.register("/d", launcher=echo_launcher(reverse=False), warm=True)
    with pytest.raises(LaunchError) as info:
        client.wait_ready(reg.id, timeout=30, launch=False)
    assert "ready report refused: 403" in str(info.value) and "not allowed" in str(info.value)


def test_pages_and_a_big_websocket_message_go_through_the_reverse_connection(gateway, client):
    reg = client.register("/data/run1", launcher=echo_launcher(), warm=True)
    session = client.wait_ready(reg.id, timeout=30)
    assert session["host"] == "127.0.0.1"
    # The port the proxy reaches is the gateway's own loopback listener, not the server's.
    assert gateway.parts.tunnels.port_of(session["id"]) == session["port"]
    assert session["port"] in listening_ports(os.getpid())
    server_ports = listening_ports(job_pid(session["job_id"]))
    assert server_ports and session["port"] not in server_ports

    tab = Tab(gateway, reg.link)
    page = tab.get("some/page?x=1")
    assert page.status_code == 200 and page.json()["raw_path"] == "/some/page?x=1"
    assert page.json()["data"] == "/data/run1"
    big = tab.get("big?n=9000000")
    assert big.status_code == 200 and len(big.content) == 9_000_000

    payload = os.urandom(5 * 1024 * 1024)  # > 4 MiB, one message
    echoed = tab.websocket_round_trip(payload)
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_a_tunnel_with_a_wrong_key_or_for_an_unknown_or_ended_session_is_refused(gateway, client):
    reg = client.register(
        "/d", launcher={"kind": "local", "options": {"command": ["{python}", "-c", "import time; time.sleep(60)"]}}
    )
    session = client.launch(reg.id)
    assert tunnel_handshake(gateway, session["id"], None) == 401
    assert tunnel_handshake(gateway, session["id"], "not-the-key") == 403
    assert tunnel_handshake(gateway, session["id"], gateway.admin_token) == 403
    assert tunnel_handshake(gateway, "no-such-session", "whatever") == 403
    assert client.get(reg.id)["session"]["state"] in ("queued", "starting"), "nothing was marked ready"
    assert gateway.parts.tunnels.port_of(session["id"]) is None

    secret = gateway.parts.registry.get_session(session["id"]).secret
    client.revoke(reg.id)
    assert tunnel_handshake(gateway, session["id"], secret) == 403, "an ended session takes no tunnel"


def test_a_dropped_reverse_connection_ends_the_session_with_a_page_offering_to_start_again(gateway, client):
    reg = client.register("/d", launcher=echo_launcher(), warm=True)
    session = client.wait_ready(reg.id, timeout=30)
    tab = Tab(gateway, reg.link)
    assert tab.get("x").status_code == 200
    os.kill(job_pid(session["job_id"]), signal.SIGKILL)  # the node vanishes; the culler sleeps 60 s

    ended = tab.wait_for(lambda s: s["state"] in ("failed", "stopped"), 20, "the session ends")
    assert ended["session_id"] == session["id"]
    assert gateway.parts.tunnels.port_of(session["id"]) is None
    wait_until(lambda: session["port"] not in listening_ports(os.getpid()), 10, "the tunnel's port is closed")
    page = tab.get(page=True)
    assert page.status_code == 503 and "Start again" in page.text

    assert tab.post("__hpcviz__/restart").status_code == 303
    again = tab.wait_for(lambda s: s["state"] == "ready", 30, "a new server through a new tunnel")
    assert again["session_id"] != session["id"]
    assert tab.get("x").status_code == 200


def test_stopping_a_session_closes_its_tunnel_and_the_server_exits(gateway, client):
    reg = client.register("/d", launcher=echo_launcher(), warm=True)
    session = client.wait_ready(reg.id, timeout=30)
    pid = job_pid(session["job_id"])
    stopped = httpx.post(
        f"{gateway.local_url}/api/sessions/{session['id']}/stop",
        headers={"Authorization": f"Bearer {gateway.admin_token}"}, trust_env=False, timeout=30,
    )  # fmt: skip
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert gateway.parts.tunnels.port_of(session["id"]) is None
    wait_until(lambda: session["port"] not in listening_ports(os.getpid()), 10, "the tunnel's port is closed")
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
               15, "the server exits")  # fmt: skip


def test_a_restarted_gateway_takes_the_running_servers_reverse_connections_back(tmp_path):
    port = free_port()  # the servers dial the same internal URL again
    settings = dict(state_dir=tmp_path / "state", port=port, allowed_backend_hosts=NO_DIRECT_REPORTS,
                    launch_timeout_s=30, poll_interval_s=60)  # fmt: skip
    first = EmbeddedGateway(**settings).start()
    reg = first.client().register("/d", launcher=echo_launcher(), warm=True)
    session = first.client().wait_ready(reg.id, timeout=30)
    first.stop(stop_sessions=False)  # as if the gateway process restarted

    with EmbeddedGateway(**settings) as second:
        back = wait_until(lambda: second.parts.tunnels.port_of(session["id"]), 20, "the server dials back")
        now = second.client().get(reg.id)["session"]
        assert now["id"] == session["id"] and now["state"] == "ready" and now["port"] == back
        tab = Tab(second, reg.link)
        assert tab.get("still-there").json()["raw_path"] == "/still-there"
        pid = job_pid(session["job_id"])
        second.client().revoke(reg.id)  # the session ends: the server is told so and exits
        wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                   15, "the server exits")  # fmt: skip


def test_a_request_right_after_a_restart_waits_for_the_server_to_dial_back(tmp_path, caplog):
    """The restarted gateway knows the session only at the old process's loopback port; a request
    arriving before the server dials again waits for it instead of ending the session."""
    caplog.set_level(logging.INFO, logger="prefect_hpcviz.viz.gateway.launch")
    port = free_port()
    settings = dict(state_dir=tmp_path / "state", port=port, allowed_backend_hosts=NO_DIRECT_REPORTS,
                    launch_timeout_s=30, poll_interval_s=60, reverse_redial_s=60)  # fmt: skip
    first = EmbeddedGateway(**settings).start()
    reg = first.client().register("/d", launcher=echo_launcher(), warm=True)
    session = first.client().wait_ready(reg.id, timeout=30)
    server = psutil.Process(job_pid(session["job_id"]))
    frozen = [server, *server.children(recursive=True)]
    for process in frozen:
        process.suspend()  # it cannot dial the next gateway until it is resumed
    try:
        first.stop(stop_sessions=False)
        with EmbeddedGateway(**settings) as second:
            tab = Tab(second, reg.link)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pending = pool.submit(tab.get, "after-restart")
                wait_until(lambda: any("waiting up to" in r.getMessage() and session["id"] in r.getMessage()
                                       for r in caplog.records), 20, "the request waits for the dial-back")
                for process in frozen:
                    process.resume()
                answer = pending.result(timeout=60)
            assert answer.status_code == 200 and answer.json()["raw_path"] == "/after-restart"
            now = second.client().get(reg.id)["session"]
            assert now["id"] == session["id"] and now["state"] == "ready"
            assert now["port"] == second.parts.tunnels.port_of(session["id"])
            second.client().revoke(reg.id)
    finally:
        for process in frozen:
            with contextlib.suppress(psutil.Error):
                process.resume()


def test_a_stream_the_server_never_dialed_ends_with_the_gateway_leaving_no_task_behind(tmp_path, caplog):
    """A proxied connection waits for the server to dial its stream; a gateway stopping meanwhile
    ends that wait too, rather than leaving it pending for the closed loop to destroy."""
    import gc
    import json
    import socket
    import threading

    caplog.set_level(logging.ERROR, logger="asyncio")
    sleeper = {"kind": "local", "options": {"reverse": True, "command": ["{python}", "-c", "import time; time.sleep(60)"]}}
    gw = EmbeddedGateway(state_dir=tmp_path, allowed_backend_hosts=NO_DIRECT_REPORTS, launch_timeout_s=120)
    gw.start()
    asked: list[dict] = []
    control_open, asked_for_stream = threading.Event(), threading.Event()

    async def hold_control(session_id: str, key: str) -> None:  # the server's control websocket, and nothing more
        async with aiohttp.ClientSession() as http:
            url = f"{gw.local_url}/api/sessions/{session_id}/tunnel"
            async with http.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as control:
                control_open.set()
                async for message in control:  # until the gateway closes it
                    asked.append(json.loads(message.data))
                    asked_for_stream.set()

    try:
        with gw.client() as c:
            session = c.launch(c.register("/d", launcher=sleeper).id)
        key = gw.parts.registry.get_session(session["id"]).secret
        server = threading.Thread(target=asyncio.run, args=(hold_control(session["id"], key),), daemon=True)
        server.start()
        port = wait_until(lambda: gw.parts.tunnels.port_of(session["id"]), 10, "the tunnel's port")
        proxied = socket.create_connection(("127.0.0.1", port))  # what the proxy does for a browser's request
        assert asked_for_stream.wait(10) and asked == [{"open": 1}]
    finally:
        gw.stop()
    server.join(10)
    assert not server.is_alive(), "the control websocket was not closed at shutdown"
    assert proxied.recv(1) == b"", "the waiting connection was not closed"
    proxied.close()
    gc.collect()  # a task still pending is reported when it is collected
    pending = [r.getMessage() for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert pending == []


def test_reverse_must_be_true_or_false(client):
    with pytest.raises(Exception) as info:
        client.register("/d", launcher={"kind": "local", "options": {"reverse": "yes"}})
    assert "launcher options.reverse" in str(info.value) and "true" in str(info.value)


def test_serve_reverse_without_a_report_url_says_what_to_give(small_reduced):
    done = subprocess.run(
        [sys.executable, "-m", "prefect_hpcviz.viz.serve", "--data", str(small_reduced.path), "--reverse"],
        env={**os.environ, "HPCVIZ_SESSION_KEY": "k"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "--reverse needs --report-url" in done.stderr


# ----------------------------------------------------------------- browser
def render_in_chromium(browser, link: str) -> None:
    page = browser.new_page()
    try:
        page.goto(link)
        page.wait_for_function(VIEW_IMAGE_READY, timeout=120_000)
        view = page.locator("#hpcviz-view")
        wait_until(lambda: is_rendered(view.screenshot()), 30, "a rendered image in the view")
    finally:
        page.close()


@pytest.mark.browser
def test_chromium_renders_the_explorer_through_the_reverse_connection(gateway, client, chromium_browser, small_reduced):
    launcher = {"kind": "local", "options": {"reverse": True}}
    reg = client.register(str(small_reduced.path), title="reverse", launcher=launcher)
    render_in_chromium(chromium_browser, reg.link)
    session = client.get(reg.id)["session"]
    assert session["state"] == "ready" and gateway.parts.tunnels.port_of(session["id"]) == session["port"]
    logs = httpx.get(
        f"{gateway.local_url}/api/sessions/{session['id']}/logs",
        headers={"Authorization": f"Bearer {gateway.admin_token}"}, trust_env=False,
    ).text  # fmt: skip
    assert "reverse connection to" in logs and re.search(r"ready on http://127\.0\.0\.1:\d+/", logs)
    client.revoke(reg.id)


# ------------------------------------------------------------------- slurm
def slurm_launcher(slurm_cluster, workdir: Path) -> dict:
    """What a site's SlurmLauncher block with ``reverse=True`` sends; serve_host stays 0.0.0.0,
    which reverse mode ignores (the server listens on the node's loopback only)."""
    from prefect_hpcviz.blocks import SlurmLauncher

    block = SlurmLauncher(
        partition=slurm_cluster["partition"], workdir=str(workdir), memory="1G", walltime="00:10:00", reverse=True
    )
    return block.launcher_spec()


@pytest.mark.slurm
def test_on_slurm_the_echo_server_serves_pages_and_big_messages_through_the_reverse_connection(
    gateway, client, slurm_cluster, tmp_path
):
    launcher = echo_launcher(kind="slurm")
    launcher["options"].update(slurm_launcher(slurm_cluster, tmp_path / "jobs")["options"])
    reg = client.register("/slurm/data", launcher=launcher, warm=True)
    session = client.wait_ready(reg.id, timeout=120)
    assert gateway.parts.tunnels.port_of(session["id"]) == session["port"]
    tab = Tab(gateway, reg.link)
    assert tab.get("p").json()["data"] == "/slurm/data"
    payload = os.urandom(6 * 1024 * 1024)
    assert tab.websocket_round_trip(payload) == payload

    subprocess.run(["scancel", session["job_id"]], check=True)  # from outside: the tunnel drops
    ended = tab.wait_for(lambda s: s["state"] in ("failed", "stopped"), 60, "the session ends")
    assert ended["session_id"] == session["id"]
    assert gateway.parts.tunnels.port_of(session["id"]) is None
    assert "Start again" in tab.get(page=True).text


@pytest.mark.slurm
@pytest.mark.browser
def test_on_slurm_chromium_renders_the_explorer_through_the_reverse_connection(
    gateway, client, slurm_cluster, chromium_browser, small_reduced, tmp_path
):
    reg = client.register(
        str(small_reduced.path), title="slurm reverse", launcher=slurm_launcher(slurm_cluster, tmp_path / "jobs")
    )
    render_in_chromium(chromium_browser, reg.link)
    session = client.get(reg.id)["session"]
    assert session["state"] == "ready" and gateway.parts.tunnels.port_of(session["id"]) == session["port"]
    stopped = httpx.post(
        f"{gateway.local_url}/api/sessions/{session['id']}/stop",
        headers={"Authorization": f"Bearer {gateway.admin_token}"}, trust_env=False, timeout=60,
    )  # fmt: skip
    assert stopped.json()["state"] == "stopped"
    squeue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
    assert session["job_id"] not in squeue
