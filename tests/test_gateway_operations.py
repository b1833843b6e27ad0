"""Running the gateway: /metrics, /healthz, the maximum session lifetime, the config file.

Real gateways (EmbeddedGateway, or the ``hpcviz gateway`` command) launch the
echo server (tests/apps/echo_server.py) through the local backend, as in
tests/test_gateway.py, whose helpers this module reuses.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.gateway import EmbeddedGateway
from prefect_hpcviz.viz.gateway.config import field_names
from prefect_hpcviz.viz.gateway.registry import _SCHEMA, Registry
from prefect_hpcviz.viz.gateway.run import config_from_args, main
from tests.helpers import free_port
from tests.test_gateway import Browser, echo_launcher, process_alive, wait_until

SLEEPER = {"kind": "local", "options": {"grace_s": 0.5, "command": ["{python}", "-c", "import time; time.sleep(60)"]}}


@pytest.fixture(scope="module")
def gateway():
    with EmbeddedGateway(launch_timeout_s=20, poll_interval_s=0.2) as gw:
        yield gw


def scrape(gateway: EmbeddedGateway, token: str | None = "admin") -> dict[tuple, float]:
    """GET /metrics, parsed: ``{(sample name, (label, value), ...): value}``."""
    headers = {"Authorization": f"Bearer {gateway.admin_token}"} if token == "admin" else {}
    response = httpx.get(f"{gateway.local_url}/metrics", headers=headers, trust_env=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, *sorted(s.labels.items()))] = s.value
    return samples


def launches(samples: dict, outcome: str) -> float:
    return samples[("hpcviz_gateway_launches_total", ("outcome", outcome))]


def proxied(samples: dict, protocol: str, direction: str) -> float:
    return samples[("hpcviz_gateway_proxied_bytes_total", ("direction", direction), ("protocol", protocol))]


def sessions(samples: dict, state: str) -> float:
    return samples[("hpcviz_gateway_sessions", ("state", state))]


# ------------------------------------------------------------------- metrics
def test_metrics_need_the_admin_token_unless_configured_public(gateway):
    url = f"{gateway.local_url}/metrics"
    assert httpx.get(url, trust_env=False).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer wrong"}, trust_env=False)
    assert wrong.status_code == 401 and "wrong admin token" in wrong.json()["error"]
    assert "hpcviz_gateway_launches_total" in str(scrape(gateway))
    spec = httpx.get(f"{gateway.local_url}/api/openapi.json", trust_env=False).json()
    assert spec["paths"]["/metrics"]["get"]["security"] == [{"admin": []}]

    with EmbeddedGateway(metrics_public=True) as public:
        assert ("hpcviz_gateway_open_websockets",) in scrape(public, token=None)
        spec = httpx.get(f"{public.local_url}/api/openapi.json", trust_env=False).json()
        assert spec["paths"]["/metrics"]["get"]["security"] == []


def test_a_launch_is_counted_with_its_latency_and_the_session_by_state(gateway):
    before = scrape(gateway)
    started = time.monotonic()
    reg = gateway.client().register("/d", launcher=echo_launcher(), warm=True)
    gateway.client().wait_ready(reg.id, timeout=20, launch=False)
    took = time.monotonic() - started
    after = scrape(gateway)

    assert launches(after, "ready") == launches(before, "ready") + 1
    count = after[("hpcviz_gateway_launch_seconds_count",)] - before[("hpcviz_gateway_launch_seconds_count",)]
    latency = after[("hpcviz_gateway_launch_seconds_sum",)] - before[("hpcviz_gateway_launch_seconds_sum",)]
    assert count == 1 and 0 < latency <= took
    assert after[("hpcviz_gateway_launch_seconds_bucket", ("le", "+Inf"))] == count + before[
        ("hpcviz_gateway_launch_seconds_bucket", ("le", "+Inf"))
    ]
    assert sessions(after, "ready") == sessions(before, "ready") + 1
    gateway.client().revoke(reg.id)
    assert sessions(scrape(gateway), "ready") == sessions(before, "ready")


def test_failed_timed_out_and_stopped_launches_are_counted_by_outcome(gateway, monkeypatch):
    client = gateway.client()
    before = scrape(gateway)
    exits = ["{python}", "-c", "import sys; sys.exit(3)"]
    failing = client.register("/d", launcher={"kind": "local", "options": {"command": exits}}, warm=True)
    revoked = client.register("/d", launcher=SLEEPER, warm=True)
    client.revoke(revoked.id)  # stopped before it was ready
    monkeypatch.setattr(gateway.config, "launch_timeout_s", 0.5)
    slow = client.register("/d", launcher=SLEEPER, warm=True)
    for viz_id in (failing.id, slow.id):
        wait_until(lambda: client.get(viz_id)["session"]["state"] == "failed", 10, "the launch fails")
    after = scrape(gateway)
    assert "did not report ready" in client.get(slow.id)["session"]["reason"]
    for outcome in ("failed", "timeout", "stopped"):
        assert launches(after, outcome) == launches(before, outcome) + 1, outcome
    assert launches(after, "ready") == launches(before, "ready")


async def test_bytes_proxied_are_counted_by_protocol_and_direction(gateway):
    client = gateway.client()
    reg = client.register("/d", launcher=echo_launcher(), warm=True)
    client.wait_ready(reg.id, timeout=20, launch=False)
    browser = Browser(gateway)
    browser.open(reg.link)
    app = f"/s/{reg.id}"

    before = scrape(gateway)
    echoed = browser.http.post(f"{app}/echo", content=b"x" * 100_000, headers={"Cookie": browser.cookie})
    assert echoed.json()["body_len"] == 100_000
    big = browser.get(f"{app}/big?n=300000", page=False)
    assert len(big.content) == 300_000
    expected_to_client = proxied(before, "http", "to_client") + len(echoed.content) + 300_000
    wait_until(lambda: proxied(scrape(gateway), "http", "to_client") == expected_to_client, 5, "http to_client")
    expected_to_backend = proxied(before, "http", "to_backend") + 100_000
    wait_until(lambda: proxied(scrape(gateway), "http", "to_backend") == expected_to_backend, 5, "http to_backend")

    ws_url = f"ws://127.0.0.1:{gateway.config.port}{app}/ws"
    async with aiohttp.ClientSession(headers={"Cookie": browser.cookie}) as http:
        async with http.ws_connect(ws_url) as ws:
            assert scrape(gateway)[("hpcviz_gateway_open_websockets",)] == 1
            await ws.send_str("hello")
            assert (await ws.receive()).data == "hello"
            await ws.send_bytes(b"\x01" * 70_000)
            assert len((await ws.receive()).data) == 70_000
    after = scrape(gateway)
    for direction in ("to_backend", "to_client"):
        assert proxied(after, "websocket", direction) == proxied(before, "websocket", direction) + 70_005
    wait_until(lambda: scrape(gateway)[("hpcviz_gateway_open_websockets",)] == 0, 5, "the websocket is gone")
    client.revoke(reg.id)


# ------------------------------------------------------------------- healthz
def test_healthz_reports_the_registry_and_active_sessions_without_authentication(gateway):
    reg = gateway.client().register("/d", launcher=echo_launcher(), warm=True)
    gateway.client().wait_ready(reg.id, timeout=20, launch=False)
    health = httpx.get(f"{gateway.local_url}/healthz", trust_env=False)
    assert health.status_code == 200 and health.headers["cache-control"] == "no-store"
    body = health.json()
    assert (body["status"], body["registry"]) == ("ok", "ok")
    assert set(body["sessions"]) == {"queued", "starting", "ready"}
    assert body["sessions"]["ready"] >= 1
    assert body["active_sessions"] == sum(body["sessions"].values())
    gateway.client().revoke(reg.id)
    after = httpx.get(f"{gateway.local_url}/healthz", trust_env=False).json()
    assert after["sessions"]["ready"] == body["sessions"]["ready"] - 1


def test_healthz_answers_503_when_the_registry_cannot_be_read():
    with EmbeddedGateway() as gw:
        gw.parts.registry.close()  # as if the database went away
        health = httpx.get(f"{gw.local_url}/healthz", trust_env=False)
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "error" and "cannot be read" in body["registry"]
        assert "registry.sqlite" in body["registry"]


# ----------------------------------------------------------- maximum lifetime
async def test_a_session_older_than_the_maximum_lifetime_is_stopped_even_while_in_use(tmp_path):
    settings = dict(max_lifetime_s=3, poll_interval_s=0.1, launch_timeout_s=20, state_dir=tmp_path)
    with EmbeddedGateway(**settings) as gw:
        client = gw.client()
        # The server's own idle exit is off, and the session is busy: only the lifetime can end it.
        reg = client.register("/d", launcher=echo_launcher("--idle-timeout", "0"), warm=True)
        session = client.wait_ready(reg.id, timeout=20, launch=False)
        browser = Browser(gw)
        browser.open(reg.link)
        async with aiohttp.ClientSession(headers={"Cookie": browser.cookie}) as http:
            async with http.ws_connect(f"ws://127.0.0.1:{gw.config.port}/s/{reg.id}/ws") as ws:
                await ws.send_str("still here")
                assert (await ws.receive()).data == "still here"
                closing = await asyncio.wait_for(ws.receive(), 15)  # the gateway ends it
                assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1001

        reason = "stopped after 3 s, the gateway's maximum session lifetime; start again"
        status = browser.status(reg.id)
        assert (status["state"], status["reason"]) == ("stopped", reason)
        wait_until(lambda: not process_alive(session["job_id"]), what="the server is stopped")
        page = browser.get(f"/s/{reg.id}/")  # says why, and does not simply start a new one
        assert page.status_code == 503
        assert "maximum session lifetime" in page.text and "Start again" in page.text
        assert client.get(reg.id)["session"]["id"] == session["id"]
        gw.stop(stop_sessions=False)

    with EmbeddedGateway(**settings) as again:  # the reason survives a gateway restart
        browser = Browser(again)
        browser.open(again.client().new_link(reg.id).link)  # it listens on another port
        assert "maximum session lifetime" in browser.get(f"/s/{reg.id}/").text
        assert browser.post(f"/s/{reg.id}/__hpcviz__/restart").status_code == 303
        assert again.client().get(reg.id)["session"]["id"] != session["id"]


def test_a_registry_from_before_the_lifetime_limit_is_upgraded_in_place(tmp_path):
    path = tmp_path / "registry.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA.replace(",\n    ask_restart INTEGER NOT NULL DEFAULT 0", ""))
    old.execute("INSERT INTO visualizations VALUES ('v', 't', '/d', 'explorer', '{}', NULL, 0, 0)")
    old.execute(
        "INSERT INTO sessions (id, viz_id, state, job_kind, secret, created_at) "
        "VALUES ('s', 'v', 'stopped', 'local', 'k', 0)"
    )
    old.commit()
    old.close()
    registry = Registry(path)
    assert registry.get_session("s").ask_restart is False
    assert registry.update_session("s", ask_restart=True).ask_restart is True
    registry.close()


def test_max_lifetime_must_be_positive():
    with pytest.raises(InputError, match="max_lifetime_s: must be positive"):
        EmbeddedGateway(max_lifetime_s=0)


# --------------------------------------------------------------- config file
def test_a_yaml_config_file_sets_fields_and_command_line_options_override_it(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"port: 9100\nstate_dir: {tmp_path / 'state'}\nmax_lifetime_s: 28800\nmetrics_public: true\n"
        "idle_timeout_s: 600\npublic_url: https://viz.example.org\n"
        "default_launcher: {kind: local, options: {python: /usr/bin/python3}}\n"
    )
    config = config_from_args(["--config", str(path), "--port", "9200", "--no-metrics-public"])
    assert config.port == 9200 and config.metrics_public is False  # the command line wins
    assert (config.max_lifetime_s, config.idle_timeout_s) == (28800, 600)
    assert config.state_dir == tmp_path / "state" and config.public_base == "https://viz.example.org"
    assert config.default_launcher == {"kind": "local", "options": {"python": "/usr/bin/python3"}}
    assert config.host == "127.0.0.1" and config.launch_timeout_s == 120  # untouched defaults


def test_a_toml_config_file_works_the_same(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('host = "0.0.0.0"\nmax_lifetime_s = 3600\n[default_launcher]\nkind = "local"\n')
    config = config_from_args(["--config", str(path), "--max-lifetime", "60"])
    assert (config.host, config.max_lifetime_s) == ("0.0.0.0", 60)
    assert config.default_launcher == {"kind": "local"}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("gw.yaml", "max_lifetime: 3600\n", r"gw.yaml: max_lifetime: is not a gateway setting\. Use one of host, port,"),
        ("gw.yaml", "port: eighty\n", r"port: 'eighty' is not int"),
        ("gw.yaml", "idle_timeout_s: true\n", r"idle_timeout_s: True is not int or float"),
        ("gw.yaml", "- port\n", r"is not a mapping"),
        ("gw.toml", "port = \n", r"is not valid TOML"),
        ("gw.ini", "port=1\n", r"unknown config file type '\.ini'"),
    ],
)
def test_a_bad_config_file_is_refused_with_what_to_fix(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        config_from_args(["--config", str(path)])


def test_an_unknown_key_lists_every_known_setting(tmp_path, capsys):
    path = tmp_path / "gw.yaml"
    path.write_text("metrics: true\n")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics: is not a gateway setting" in err
    assert all(name in err for name in field_names())
    assert "max_lifetime_s" in field_names() and "metrics_public" in field_names()


def test_the_gateway_command_runs_from_a_config_file(tmp_path):
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"port: {port}\nstate_dir: {tmp_path / 'state'}\nmetrics_public: true\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect_hpcviz.viz.gateway", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "hpcviz gateway on" in proc.stdout.readline()  # printed once it listens
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False)
        assert metrics.status_code == 200 and "hpcviz_gateway_sessions" in metrics.text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False).json()["registry"] == "ok"
        assert (tmp_path / "state" / "registry.sqlite").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_the_access_log_is_off_unless_asked_for():
    from prefect_hpcviz.viz.gateway.run import config_from_args

    assert config_from_args(["--state-dir", "/tmp/hpcviz-gw-opts"]).access_log is False
    assert config_from_args(["--state-dir", "/tmp/hpcviz-gw-opts", "--access-log"]).access_log is True
