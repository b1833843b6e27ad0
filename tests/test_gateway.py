"""The gateway end to end: register, share a link, click, wait, use, revoke, restart, cull.

A real gateway (EmbeddedGateway) launches a real viz-server stand-in
(tests/apps/echo_server.py) through the local backend, with the launcher's
``command`` template. "The browser" is an HTTP client that keeps the cookie
the link gave it, as a browser would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from prefect_hpcviz.viz.errors import InputError, LaunchError
from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayClient, GatewayError
from tests.helpers import free_port

ECHO = Path(__file__).parent / "apps" / "echo_server.py"


def echo_launcher(*extra: str) -> dict:
    """Launch the echo server instead of the trame app (the way a site sets its own command)."""
    command = [
        "{python}",
        str(ECHO),
        "--report-url",
        "{report_url}",
        "--data",
        "{data}",
        "--app",
        "{app}",
        "--idle-timeout",
        "{idle_timeout}",
        *extra,
    ]
    return {"kind": "local", "options": {"grace_s": 1, "command": command}}


class Browser:
    """Opens links and keeps the cookie it gets, like a browser on a single tab."""

    def __init__(self, gateway: EmbeddedGateway) -> None:
        self.gateway = gateway
        self.http = httpx.Client(
            base_url=gateway.local_url, trust_env=False, follow_redirects=False, timeout=30
        )
        self.cookie = ""

    def open(self, link: str) -> httpx.Response:
        # The gateway listens on local_url; its public URL may add a prefix an outer proxy strips.
        assert link.startswith(self.gateway.url), link
        response = self.http.get(link[len(self.gateway.url) :], headers={"Accept": "text/html"})
        if "set-cookie" in response.headers:
            self.cookie = response.headers["set-cookie"].split(";")[0]
        return response

    def get(self, path: str, *, page: bool = True, headers: dict | None = None) -> httpx.Response:
        all_headers = {"Cookie": self.cookie, "Accept": "text/html" if page else "application/json"}
        all_headers.update(headers or {})
        return self.http.get(path, headers=all_headers)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.http.post(path, headers={"Cookie": self.cookie, "Accept": "text/html"}, **kwargs)

    def status(self, viz_id: str, *, since: str | None = None, wait: float = 0) -> dict:
        query = f"?wait={wait}&since={since}" if since else ""
        response = self.get(f"/s/{viz_id}/__hpcviz__/status{query}", page=False)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_state(self, viz_id: str, wanted: str, timeout: float = 20.0) -> dict:
        """Long-poll the status endpoint (as the waiting page does) until ``wanted``."""
        deadline = time.monotonic() + timeout
        status = self.status(viz_id)
        while status["state"] != wanted:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"still {status} after {timeout} s"
            status = self.status(viz_id, since=status["state"], wait=min(5, remaining))
        return status


@pytest.fixture(scope="module")
def gateway():
    with EmbeddedGateway(launch_timeout_s=20, poll_interval_s=0.2) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway):
    with gateway.client() as c:
        yield c


def process_alive(job_id: str) -> bool:
    pid, started = (int(x) for x in job_id.split("."))
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() * 100 - started) <= 2 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.02)
    return result


# --------------------------------------------------------------------- links
def test_registering_returns_a_link_a_url_and_when_the_link_expires(gateway, client):
    before = dt.datetime.now(dt.timezone.utc)
    reg = client.register("/data/run1", app="explorer", title="run 1", link_ttl_s=3600)
    assert reg.link.startswith(f"{gateway.url}/v/{reg.id}?token=")
    assert reg.url == f"{gateway.url}/s/{reg.id}/"
    assert dt.timedelta(seconds=3590) < reg.expires_at - before < dt.timedelta(seconds=3610)
    info = client.get(reg.id)
    assert (info["title"], info["data"], info["app"], info["revoked"], info["session"]) == (
        "run 1", "/data/run1", "explorer", False, None,
    )  # fmt: skip


def test_opening_a_link_sets_a_scoped_cookie_and_takes_the_token_out_of_the_address_bar(gateway, client):
    reg = client.register("/data/run1")
    response = Browser(gateway).open(reg.link)
    assert response.status_code == 303
    assert response.headers["location"] == f"/s/{reg.id}/"
    assert "token" not in response.headers["location"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("hpcviz_auth=")
    flags = {f.strip().split("=")[0].lower(): f.strip() for f in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"] == "SameSite=Lax"
    assert flags["path"] == f"Path=/s/{reg.id}/"
    assert "secure" not in flags  # plain http here
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


def test_cookies_are_secure_when_users_reach_the_gateway_over_https():
    with EmbeddedGateway(public_url="https://viz.example.org/hpcviz") as gw:
        reg = gw.client().register("/data/run1")
        assert reg.link.startswith(f"https://viz.example.org/hpcviz/v/{reg.id}?token=")
        response = Browser(gw).open(reg.link)
        assert response.headers["location"] == f"/hpcviz/s/{reg.id}/"
        cookie = response.headers["set-cookie"]
        assert "Secure" in cookie and f"Path=/hpcviz/s/{reg.id}/" in cookie


def test_a_tampered_or_foreign_link_gets_a_page_saying_to_ask_for_a_new_one(gateway, client):
    one, other = client.register("/data/a"), client.register("/data/b")
    browser = Browser(gateway)
    tampered = one.link[:-3] + ("xyz" if not one.link.endswith("xyz") else "abc")
    foreign = other.link.replace(f"/v/{other.id}", f"/v/{one.id}")
    for link, why in [(tampered, "signature"), (foreign, "another visualization")]:
        response = browser.open(link)
        assert response.status_code == 403
        assert "text/html" in response.headers["content-type"]
        assert why in response.text and "new link" in response.text
        assert "set-cookie" not in response.headers


def test_the_app_address_without_the_cookie_is_forbidden_with_a_helpful_answer(gateway, client):
    reg = client.register("/data/run1")
    stranger = Browser(gateway)
    page = stranger.get(f"/s/{reg.id}/")
    assert page.status_code == 403 and "Open the link you were given" in page.text
    api = stranger.get(f"/s/{reg.id}/__hpcviz__/status", page=False)
    assert api.status_code == 403 and "link" in api.json()["error"]
    forged = stranger.get(
        f"/s/{reg.id}/", headers={"Cookie": f"hpcviz_auth=cookie.{reg.id}.9999999999.forged"}
    )
    assert forged.status_code == 403 and "expired" in forged.text


def test_the_admin_api_takes_only_the_bearer_token(gateway, client):
    reg = client.register("/data/run1")
    browser = Browser(gateway)
    browser.open(reg.link)
    anonymous = httpx.Client(base_url=gateway.local_url, trust_env=False)
    assert anonymous.get(f"/api/visualizations/{reg.id}").status_code == 401
    wrong = anonymous.get(f"/api/visualizations/{reg.id}", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and "wrong admin token" in wrong.json()["error"]
    # The viewer's cookie opens the app, never the admin API.
    with_cookie = browser.http.delete(f"/api/visualizations/{reg.id}", headers={"Cookie": browser.cookie})
    assert with_cookie.status_code == 401
    assert client.get(reg.id)["revoked"] is False
    with pytest.raises(GatewayError, match="wrong admin token"):
        GatewayClient(gateway.local_url, "wrong").get(reg.id)


def test_bad_registrations_are_refused_with_what_to_fix(client):
    with pytest.raises(InputError, match="data: missing"):
        client.register("")
    with pytest.raises(InputError, match="unknown backend.*local"):
        client.register("/d", launcher={"kind": "pbs", "options": {}})
    with pytest.raises(InputError, match="unknown option.*queue"):
        client.register("/d", launcher={"kind": "local", "options": {"queue": "gpu"}})
    with pytest.raises(InputError, match=r"unknown placeholder \{secret\}"):
        client.register("/d", launcher={"kind": "local", "options": {"command": ["{python}", "{secret}"]}})


# ------------------------------------------------------------ launch on click
def test_clicking_a_link_starts_the_server_shows_a_waiting_page_then_the_app(gateway, client, monkeypatch):
    monkeypatch.setattr(gateway.config, "hold_first_page_s", 0.0)  # answer with the waiting page at once
    reg = client.register("/data/run1", app="echo", title="Run one", launcher=echo_launcher())
    browser = Browser(gateway)
    browser.open(reg.link)
    waiting = browser.get(f"/s/{reg.id}/")
    assert waiting.status_code == 200
    assert "Run one" in waiting.text and "__hpcviz__/status" in waiting.text
    assert "nonce-" in waiting.headers["content-security-policy"]
    assert browser.status(reg.id)["state"] in ("queued", "starting", "ready")
    # While it starts, the app's own requests get a clear JSON answer, not a hang.
    early = browser.get(f"/s/{reg.id}/api/data", page=False)
    assert early.status_code in (200, 503)
    if early.status_code == 503:
        assert "not ready yet" in early.json()["error"]

    status = browser.wait_for_state(reg.id, "ready")
    assert status["message"] == "Ready."
    echo = browser.get(f"/s/{reg.id}/index.html", page=False).json()
    assert echo["raw_path"] == "/index.html"
    assert (echo["app"], echo["data"]) == ("echo", "/data/run1")
    sent_cookies = [v for k, v in echo["headers"] if k.lower() == "cookie"]
    assert not any("hpcviz_auth" in c for c in sent_cookies)  # the gateway's cookie stays with the gateway

    session = client.get(reg.id)["session"]
    assert session["state"] == "ready" and session["host"] == "127.0.0.1"
    assert "secret" not in session
    assert process_alive(session["job_id"])


def test_a_server_ready_within_the_hold_time_is_shown_at_once_without_a_waiting_page(gateway, client, monkeypatch):
    monkeypatch.setattr(gateway.config, "hold_first_page_s", 20.0)  # well above the echo server's start
    reg = client.register("/data/run2", app="echo", title="Run two", launcher=echo_launcher())
    browser = Browser(gateway)
    browser.open(reg.link)
    first = browser.get(f"/s/{reg.id}/index.html")
    assert first.status_code == 200
    assert first.json()["raw_path"] == "/index.html", "the first answer is the app, not the waiting page"
    assert client.get(reg.id)["session"]["state"] == "ready"


def test_a_server_that_exits_at_once_ends_failed_and_shows_why(gateway, client):
    command = ["{python}", "-c", "import sys; print('cannot open {data}: no such file'); sys.exit(3)"]
    reg = client.register("/data/missing", launcher={"kind": "local", "options": {"command": command}})
    browser = Browser(gateway)
    browser.open(reg.link)
    browser.get(f"/s/{reg.id}/")
    status = browser.wait_for_state(reg.id, "failed")
    assert "exit code 3" in status["reason"]
    assert "cannot open /data/missing: no such file" in status["log_tail"]

    page = browser.get(f"/s/{reg.id}/")
    assert page.status_code == 503
    assert "could not start" in page.text and "exit code 3" in page.text
    assert "cannot open /data/missing" in page.text
    assert 'action="__hpcviz__/restart"' in page.text and "Start again" in page.text
    with pytest.raises(LaunchError, match="exit code 3(.|\n)*cannot open /data/missing"):
        client.wait_ready(reg.id, timeout=20)


def test_a_server_that_never_reports_ready_fails_after_the_launch_timeout():
    with EmbeddedGateway(launch_timeout_s=1.0, poll_interval_s=0.2) as gw:
        command = [
            "{python}",
            "-c",
            "import time; print('loading a huge dataset', flush=True); time.sleep(60)",
        ]
        reg = gw.client().register(
            "/d", launcher={"kind": "local", "options": {"command": command, "grace_s": 0.5}}
        )
        browser = Browser(gw)
        browser.open(reg.link)
        browser.get(f"/s/{reg.id}/")
        status = browser.wait_for_state(reg.id, "failed", timeout=10)
        assert "did not report ready within 1 s" in status["reason"]
        assert "loading a huge dataset" in status["log_tail"]
        assert not process_alive(gw.client().get(reg.id)["session"]["job_id"])


def test_the_gateways_own_pages_are_answered_by_the_gateway_never_proxied(gateway, client):
    reg = client.register("/d", launcher=echo_launcher(), warm=True)
    browser = Browser(gateway)
    browser.open(reg.link)
    browser.wait_for_state(reg.id, "ready")
    assert browser.get(f"/s/{reg.id}/hello", page=False).json()["raw_path"] == "/hello"  # the app: proxied
    unknown = browser.get(f"/s/{reg.id}/__hpcviz__/nothing-here", page=False)
    assert unknown.status_code == 404 and "raw_path" not in unknown.text  # not the echo server's answer
    wrong = browser.get(f"/s/{reg.id}/__hpcviz__/restart", page=False)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert browser.http.head(f"/s/{reg.id}/__hpcviz__/status", headers={"Cookie": browser.cookie}).status_code == 200
    stranger = Browser(gateway).get(f"/s/{reg.id}/__hpcviz__/status", page=False)  # no cookie: not for anyone
    assert stranger.status_code == 403


def test_start_again_launches_a_new_server(gateway, client):
    reg = client.register("/d", launcher=echo_launcher(), warm=True)
    browser = Browser(gateway)
    browser.open(reg.link)
    first = browser.wait_for_state(reg.id, "ready")["session_id"]
    response = browser.post(f"/s/{reg.id}/__hpcviz__/restart")
    assert response.status_code == 303 and response.headers["location"] == f"/s/{reg.id}/"
    second = browser.wait_for_state(reg.id, "ready")["session_id"]
    assert second != first
    assert client.get(reg.id)["session"]["id"] == second


def test_a_server_that_dies_mid_session_gives_a_page_offering_to_start_again(client, tmp_path):
    # A slow culler, so that the proxy is the first to notice.
    with EmbeddedGateway(poll_interval_s=60, state_dir=tmp_path) as gw:
        gw_client = gw.client()
        reg = gw_client.register("/d", launcher=echo_launcher(), warm=True)
        session = gw_client.wait_ready(reg.id, timeout=20)
        browser = Browser(gw)
        browser.open(reg.link)
        assert browser.get(f"/s/{reg.id}/exit", page=False).text == "bye"
        wait_until(lambda: not process_alive(session["job_id"]), what="the server exits")
        page = browser.get(f"/s/{reg.id}/")
        assert page.status_code == 503
        assert "The 3D view stopped" in page.text and "Start again" in page.text
        xhr = browser.get(f"/s/{reg.id}/api", page=False)
        assert xhr.status_code == 503 and "not running" in xhr.json()["error"]
        assert browser.post(f"/s/{reg.id}/__hpcviz__/restart").status_code == 303
        assert browser.wait_for_state(reg.id, "ready")["session_id"] != session["id"]


# ------------------------------------------------------------- revoke/restart
def test_revoking_kills_links_and_cookies_at_once_and_stops_the_server(gateway, client):
    reg = client.register("/d", launcher=echo_launcher(), warm=True)
    session = client.wait_ready(reg.id, timeout=20)
    browser = Browser(gateway)
    browser.open(reg.link)
    assert browser.get(f"/s/{reg.id}/hello", page=False).status_code == 200

    client.revoke(reg.id)
    assert browser.get(f"/s/{reg.id}/hello", page=False).status_code == 403
    response = Browser(gateway).open(reg.link)
    assert response.status_code == 403 and "withdrawn" in response.text
    assert not process_alive(session["job_id"])
    assert client.get(reg.id)["session"]["state"] == "stopped"
    with pytest.raises(GatewayError, match="revoked"):
        client.new_link(reg.id)


def test_an_operator_can_stop_a_session_and_the_next_click_starts_a_new_one(gateway, client):
    reg = client.register("/d", launcher=echo_launcher(), warm=True)
    first = client.wait_ready(reg.id, timeout=20)
    stopped = httpx.post(
        f"{gateway.local_url}/api/sessions/{first['id']}/stop",
        headers={"Authorization": f"Bearer {gateway.admin_token}"},
    )
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert not process_alive(first["job_id"])

    browser = Browser(gateway)
    browser.open(reg.link)
    browser.get(f"/s/{reg.id}/")
    second = browser.wait_for_state(reg.id, "ready")
    assert client.get(reg.id)["session"]["id"] != first["id"]
    assert second["state"] == "ready"


def test_a_restarted_gateway_keeps_visualizations_links_and_running_servers(tmp_path):
    state = tmp_path / "state"
    settings = dict(state_dir=state, public_url="http://viz.test", launch_timeout_s=20, poll_interval_s=0.2)
    first = EmbeddedGateway(**settings).start()
    token = first.admin_token
    reg = first.client().register("/d", launcher=echo_launcher(), warm=True)
    session = first.client().wait_ready(reg.id, timeout=20)
    first.stop(stop_sessions=False)  # as if the gateway process restarted

    with EmbeddedGateway(**settings) as second:
        assert second.admin_token == token
        assert second.client().get(reg.id)["session"]["id"] == session["id"]
        browser = Browser(second)
        assert browser.open(reg.link).status_code == 303  # the old link still works
        echo = browser.get(f"/s/{reg.id}/still-there", page=False)
        assert echo.status_code == 200 and echo.json()["raw_path"] == "/still-there"
        assert process_alive(session["job_id"])
        second.client().revoke(reg.id)  # the new gateway can stop the old gateway's server
        assert not process_alive(session["job_id"])


def test_idle_sessions_are_stopped(tmp_path):
    with EmbeddedGateway(idle_timeout_s=0.5, poll_interval_s=0.1, state_dir=tmp_path) as gw:
        # The server's own idle exit is switched off: the gateway must be the one that stops it.
        reg = gw.client().register("/d", launcher=echo_launcher("--idle-timeout", "0"), warm=True)
        session = gw.client().wait_ready(reg.id, timeout=20)
        browser = Browser(gw)
        browser.open(reg.link)
        status = browser.wait_for_state(reg.id, "stopped", timeout=10)
        assert "without activity" in status["reason"]
        wait_until(lambda: not process_alive(session["job_id"]), what="the idle server is stopped")


def test_stopping_an_embedded_gateway_stops_the_servers_it_launched():
    gw = EmbeddedGateway().start()
    reg = gw.client().register("/d", launcher=echo_launcher(), warm=True)
    session = gw.client().wait_ready(reg.id, timeout=20)
    gw.stop()
    assert not process_alive(session["job_id"])


# ------------------------------------------------------------------ security
def test_a_ready_report_from_a_host_outside_the_allowed_pattern_is_refused(gateway, client):
    reg = client.register("/d", launcher=echo_launcher("--report-host", "169.254.169.254"), warm=True)
    with pytest.raises(LaunchError) as info:
        client.wait_ready(reg.id, timeout=20, launch=False)
    message = str(info.value)
    assert (
        "ready report refused: 403" in message and "169.254.169.254" in message and "not allowed" in message
    )
    assert client.get(reg.id)["session"]["host"] is None


def test_a_ready_report_needs_the_session_key(gateway, client):
    reg = client.register(
        "/d",
        launcher={"kind": "local", "options": {"command": ["{python}", "-c", "import time; time.sleep(30)"]}},
    )
    session = client.launch(reg.id)
    url = f"/api/sessions/{session['id']}/ready"
    anonymous = httpx.Client(base_url=gateway.local_url, trust_env=False)
    body = {"host": "127.0.0.1", "port": 1234}
    assert anonymous.post(url, json=body).status_code == 401
    refused = anonymous.post(url, json=body, headers={"Authorization": f"Bearer {gateway.admin_token}"})
    assert refused.status_code == 403 and "key does not match" in refused.json()["error"]
    assert client.get(reg.id)["session"]["state"] in ("queued", "starting")
    client.revoke(reg.id)


@pytest.mark.parametrize(
    "path", ["/s/{id}/../../api/visualizations", "/s/{id}/%2e%2e/%2E%2E/healthz", "/s/{id}/./x"]
)
def test_dot_segments_cannot_escape_the_app_prefix(gateway, client, path):
    reg = client.register("/d")
    browser = Browser(gateway)
    browser.open(reg.link)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.config.port, timeout=10)
    conn.request(
        "GET",
        path.format(id=reg.id),
        headers={"Cookie": browser.cookie, "Authorization": f"Bearer {gateway.admin_token}"},
    )
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 400 and "'..'" in body
    conn.close()


# -------------------------------------------------------------------- client
def test_the_python_client_covers_the_rest_api(gateway, client):
    assert client.health()["status"] == "ok"
    reg = client.register("/d", title="client tour", launcher=echo_launcher())
    session = client.wait_ready(reg.id, timeout=20)
    assert session["state"] == "ready"
    assert client.launch(reg.id)["id"] == session["id"]  # already running: same session
    fresh = client.new_link(reg.id, link_ttl_s=60)
    assert fresh.id == reg.id and fresh.link != reg.link
    assert Browser(gateway).open(fresh.link).status_code == 303
    assert reg.id in [v["id"] for v in client.list()]
    spec = httpx.get(f"{gateway.local_url}/api/openapi.json", trust_env=False).json()
    assert "/api/visualizations" in spec["paths"] and spec["openapi"].startswith("3.")
    client.revoke(reg.id)


def test_unknown_addresses_get_json_not_a_bare_status(gateway):
    response = httpx.get(f"{gateway.local_url}/nope", trust_env=False)
    assert response.status_code == 404 and "Not Found" in response.json()["error"]
    missing = httpx.get(f"{gateway.local_url}/v/doesnotexist?token=x", trust_env=False)
    assert missing.status_code == 404 and "No such visualization" in missing.text


def test_slash_redirect_keeps_the_query(gateway, client):
    reg = client.register("/d")
    response = httpx.get(f"{gateway.local_url}/s/{reg.id}?a=1&b=%2F", trust_env=False)
    assert response.status_code == 301
    assert response.headers["location"] == f"/s/{reg.id}/?a=1&b=%2F"


def test_waiting_page_urls_are_relative_so_the_gateway_can_sit_behind_a_prefix(gateway, client):
    reg = client.register(
        "/d",
        launcher={"kind": "local", "options": {"command": ["{python}", "-c", "import time; time.sleep(30)"]}},
    )
    browser = Browser(gateway)
    browser.open(reg.link)
    deep = browser.get(f"/s/{reg.id}/a/b/view.html")
    assert deep.status_code == 200
    assert re.search(r'"\.\./\.\./__hpcviz__/status"', deep.text)
    client.revoke(reg.id)


def test_the_launcher_command_template_gets_the_session_values(gateway, client, tmp_path):
    out = tmp_path / "args.txt"
    script = (
        f"import sys, os; open({str(out)!r}, 'w').write(repr(sys.argv[1:]) + os.environ['HPCVIZ_SESSION_ID'])"
    )
    command = [
        "{python}",
        "-c",
        script,
        "{app}",
        "{data}",
        "{report_url}",
        "{idle_timeout}",
        "{session_id}",
        "{viz_id}",
    ]
    reg = client.register(
        "/data/x", app="explorer", launcher={"kind": "local", "options": {"command": command}}, warm=True
    )
    wait_until(out.exists, what="the job writes its arguments")
    wait_until(lambda: out.read_text().endswith(client.get(reg.id)["session"]["id"]), what="complete file")
    session = client.get(reg.id)["session"]
    args = eval(out.read_text()[: -len(session["id"])])  # noqa: S307 - our own repr
    assert args == [
        "explorer", "/data/x", f"{gateway.config.internal_base}/api/sessions/{session['id']}/ready",
        "900", session["id"], reg.id,
    ]  # fmt: skip
    assert sys.executable  # {python} is the gateway's interpreter (checked by every echo test)


def test_link_tokens_never_reach_the_access_log(gateway, client, caplog):
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    reg = client.register("/d")
    token = reg.link.split("token=", 1)[1]
    Browser(gateway).open(reg.link)
    line = wait_until(
        lambda: [r.getMessage() for r in caplog.records if f"/v/{reg.id}" in r.getMessage()],
        what="access log line",
    )[0]
    assert "token=<redacted>" in line and token not in line and " 303 " in line


def test_the_gateway_runs_as_a_command_until_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect_hpcviz.viz.gateway",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "hpcviz gateway on" in proc.stdout.readline()
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False).json()
        assert health["status"] == "ok"
        token = (tmp_path / "admin_token").read_text()
        reg = GatewayClient(f"http://127.0.0.1:{port}", token).register("/d")
        assert reg.link.startswith(f"http://127.0.0.1:{port}/v/")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# -------------------------------------------------------------------- browser
CHROMIUM = Path("/usr/lib/chromium/chromium")


async def _page_text(page) -> str:
    try:
        return await page.content()
    except Exception:  # mid-navigation: ask again
        return ""


async def _eventually(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        await asyncio.sleep(0.05)


@pytest.mark.browser
async def test_in_a_browser_the_waiting_page_turns_into_the_app_or_into_the_error(gateway, client, monkeypatch):
    monkeypatch.setattr(gateway.config, "hold_first_page_s", 0.0)
    # Playwright's async API in the test's own loop: a session-wide sync Playwright
    # would leave a running loop behind that breaks every later asyncio test.
    if not CHROMIUM.exists():
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "Chromium is not installed (apt-get install chromium)"
        )
    from playwright.async_api import async_playwright

    slow = client.register("/data/slow", title="Slow start", launcher=echo_launcher("--ready-delay", "1.5"))
    failing = ["{python}", "-c", "import sys; print('no such field: pressure'); sys.exit(2)"]
    broken = client.register("/data/broken", launcher={"kind": "local", "options": {"command": failing}})
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page()
            await page.goto(slow.link)
            assert page.url == slow.url  # the token is gone from the address bar
            await page.wait_for_selector("text=Slow start", timeout=10_000)
            message = await page.locator("#message").inner_text()
            assert message in ("Waiting for a node to run the viz server…", "Starting the viz server…")
            # The page long-polls the status and reloads itself into the app (here: the echo's JSON).
            await _eventually(
                lambda: _contains(page, '"raw_path": "/"'), 20, "the app replaces the waiting page"
            )

            await page.goto(broken.link)
            await page.wait_for_selector("text=could not start", timeout=20_000)
            assert "no such field: pressure" in await page.locator("#log").inner_text()
            assert "exit code 2" in await page.locator("#reason").inner_text()
            first_attempt = client.get(broken.id)["session"]["id"]
            async with page.expect_navigation():
                await page.click("text=Start again")
            await page.wait_for_selector("text=could not start", timeout=20_000)
            assert client.get(broken.id)["session"]["id"] != first_attempt  # a new attempt was made
        finally:
            await browser.close()


async def _contains(page, text: str) -> bool:
    return text in await _page_text(page)


# ------------------------------------------------------------------- standby
def standby_pids(state_dir: Path) -> set[int]:
    """Running children of this process started as ``serve --standby`` by the gateway on ``state_dir``."""
    found = set()
    for child in psutil.Process().children():
        try:
            if (
                "--standby" in child.cmdline()
                and Path(child.cwd()).is_relative_to(state_dir)
                and child.status() != psutil.STATUS_ZOMBIE
            ):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def test_a_click_goes_to_the_waiting_standby_and_a_new_one_replaces_it(small_simulation, tmp_path):
    assert standby_pids(tmp_path) == set()
    launcher = {"kind": "local", "options": {"standby_delay_s": 0.5}}
    with EmbeddedGateway(
        state_dir=tmp_path, launch_timeout_s=60, poll_interval_s=0.2, default_launcher=launcher
    ) as gw:
        waiting = wait_until(lambda: standby_pids(tmp_path), 30, "a standby server started with the gateway")
        assert len(waiting) == 1
        client = gw.client()
        reg = client.register(str(small_simulation))
        browser = Browser(gw)
        browser.open(reg.link)
        assert browser.get(f"/s/{reg.id}/").status_code == 200  # the waiting page; it launches
        browser.wait_for_state(reg.id, "ready", timeout=60)

        session = client.get(reg.id)["session"]
        pid = int(session["job_id"].split(".")[0])
        assert {pid} == waiting  # served by the process started before the click
        secret = gw.parts.registry.get_session(session["id"]).secret
        assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        page = browser.get(f"/s/{reg.id}/index.html")  # the explorer, proxied
        assert page.status_code == 200 and '<div id="app">' in page.text
        assert len(list((tmp_path / "jobs").glob(f"*-{session['job_id']}.log"))) == 1

        replacement = wait_until(lambda: standby_pids(tmp_path) - {pid}, 30, "a replacement standby")
        assert len(replacement) == 1
    assert standby_pids(tmp_path) == set()  # stopping the gateway left no standby (nor the session)
    assert not process_alive(session["job_id"])


def test_a_custom_command_template_never_goes_to_a_standby(tmp_path):
    with EmbeddedGateway(state_dir=tmp_path, poll_interval_s=0.2) as gw:
        waiting = wait_until(lambda: standby_pids(tmp_path), 30, "a standby server started with the gateway")
        client = gw.client()
        reg = client.register("/d", launcher=echo_launcher(), warm=True)
        session = client.wait_ready(reg.id, timeout=30)
        job = psutil.Process(int(session["job_id"].split(".")[0]))
        assert str(ECHO) in job.cmdline() and job.pid not in waiting
        assert standby_pids(tmp_path) == waiting  # still waiting for a click on a standard launcher
    assert standby_pids(tmp_path) == set()
