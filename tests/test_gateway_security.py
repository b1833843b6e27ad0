"""Attacks on the gateway, each with the refusal it must get.

Real gateways (EmbeddedGateway) on 127.0.0.1 launch the echo server
(tests/apps/echo_server.py) through the local backend, as in
tests/test_gateway.py. Every request here is a real HTTP request from
127.0.0.1; a gateway "behind a proxy" is one whose ``trusted_proxies``
include 127.0.0.1, and one "reached directly" trusts only 192.0.2.0/24
(TEST-NET-1, an address this machine never has).

- single sign-on: the user header is believed only from trusted proxies;
  sessions belong to the user who started them; other users get 403
- websockets: a page of another origin cannot open one (cross-site
  websocket hijacking), refused before the backend is contacted
- cookies: Secure behind https, also when a trusted TLS proxy says so
"""

from __future__ import annotations

import socket
import sqlite3

import aiohttp
import httpx
import pytest

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.gateway import EmbeddedGateway
from prefect_hpcviz.viz.gateway.config import GatewayConfig, read_config_file
from prefect_hpcviz.viz.gateway.registry import _SCHEMA, Registry
from prefect_hpcviz.viz.gateway.run import config_from_args
from tests.test_gateway import echo_launcher

USER_HEADER = "X-Forwarded-User"
BEHIND_PROXY = {"trusted_proxies": ["127.0.0.1/32"], "user_header": USER_HEADER}
ELSEWHERE = ["192.0.2.0/24"]  # trusted proxies that are not us


class Person:
    """One browser: keeps the cookie its link gave it; a trusted proxy in front may name the user."""

    def __init__(self, gateway: EmbeddedGateway, user: str | None = None, **headers: str) -> None:
        if user is not None:
            headers[USER_HEADER] = user
        self.http = httpx.Client(
            base_url=gateway.local_url, trust_env=False, follow_redirects=False, timeout=30, headers=headers
        )
        self.gateway = gateway
        self.cookie = ""

    def open(self, link: str) -> httpx.Response:
        response = self.http.get(link[len(self.gateway.url) :], headers={"Accept": "text/html"})
        if "set-cookie" in response.headers:
            self.cookie = response.headers["set-cookie"].split(";")[0]
        return response

    def get(self, path: str, *, cookie: str | None = None, page: bool = False) -> httpx.Response:
        accept = "text/html" if page else "application/json"
        return self.http.get(path, headers={"Cookie": self.cookie if cookie is None else cookie, "Accept": accept})

    def post(self, path: str, *, cookie: str | None = None) -> httpx.Response:
        return self.http.post(path, headers={"Cookie": self.cookie if cookie is None else cookie})

    def wait_ready(self, viz_id: str, timeout: float = 20) -> dict:
        status = self.get(f"/s/{viz_id}/__hpcviz__/status").json()
        while status["state"] != "ready":
            assert status["state"] in ("none", "queued", "starting"), status
            status = self.get(f"/s/{viz_id}/__hpcviz__/status?since={status['state']}&wait={timeout}").json()
        return status


def websocket_handshake(gateway: EmbeddedGateway, path: str, cookie: str, **headers: str) -> int:
    """The status a websocket handshake gets (101: accepted), sent as a browser would."""
    response = httpx.get(
        f"{gateway.local_url}{path}",
        headers={
            "Cookie": cookie,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            **headers,
        },
        trust_env=False,
    )
    return response.status_code


# ------------------------------------------------------------- single sign-on
@pytest.fixture(scope="module")
def sso_gateway():
    with EmbeddedGateway(launch_timeout_s=20, poll_interval_s=0.2, **BEHIND_PROXY) as gw:
        yield gw


def test_sso_a_session_belongs_to_the_user_who_started_it_and_other_users_get_403(sso_gateway):
    gw, client = sso_gateway, sso_gateway.client()
    reg = client.register("/data/alice", launcher=echo_launcher())
    alice, bob = Person(gw, "alice"), Person(gw, "bob")
    assert alice.open(reg.link).status_code == 303
    alice.get(f"/s/{reg.id}/", page=True)  # her click starts the server
    session_id = alice.wait_ready(reg.id)["session_id"]
    assert gw.parts.registry.get_session(session_id).user == "alice"
    assert client.get(reg.id)["session"]["user"] == "alice"
    assert alice.get(f"/s/{reg.id}/hello").json()["raw_path"] == "/hello"

    # Bob has a valid link of his own: opening it is refused while Alice's server runs.
    opened = bob.open(reg.link)
    assert opened.status_code == 403 and "another user" in opened.text
    assert "set-cookie" not in opened.headers
    # Even with Alice's cookie (copied from her machine) he reaches nothing of hers.
    for path in (f"/s/{reg.id}/hello", f"/s/{reg.id}/__hpcviz__/status", f"/s/{reg.id}/"):
        refused = bob.get(path, cookie=alice.cookie)
        assert refused.status_code == 403 and "another user" in refused.text, path
    assert bob.post(f"/s/{reg.id}/__hpcviz__/restart", cookie=alice.cookie).status_code == 403
    ws = websocket_handshake(gw, f"/s/{reg.id}/ws", alice.cookie, **{USER_HEADER: "bob"})
    assert ws == 403
    assert client.get(reg.id)["session"]["id"] == session_id  # nothing restarted

    # Once her session has ended, Bob may start his own.
    stopped = httpx.post(
        f"{gw.local_url}/api/sessions/{session_id}/stop",
        headers={"Authorization": f"Bearer {gw.admin_token}"},
        trust_env=False,
    )
    assert stopped.json()["state"] == "stopped"
    assert bob.open(reg.link).status_code == 303
    bob.get(f"/s/{reg.id}/", page=True)
    assert gw.parts.registry.get_session(bob.wait_ready(reg.id)["session_id"]).user == "bob"
    assert alice.get(f"/s/{reg.id}/hello").status_code == 403
    client.revoke(reg.id)


def test_sso_without_a_user_from_the_trusted_proxy_is_asked_to_sign_in(sso_gateway):
    reg = sso_gateway.client().register("/d")
    anonymous = Person(sso_gateway)
    response = anonymous.open(reg.link)
    assert response.status_code == 401 and "Sign in" in response.text
    assert "set-cookie" not in response.headers
    assert anonymous.get(f"/s/{reg.id}/").status_code == 401
    for bad in ("", "<script>", "a;b", "x" * 300):  # the proxy sent nothing usable
        assert Person(sso_gateway, bad).open(reg.link).status_code == 401, repr(bad)


def test_sso_a_user_header_from_an_address_that_is_not_a_trusted_proxy_is_refused():
    with EmbeddedGateway(trusted_proxies=ELSEWHERE, user_header=USER_HEADER) as gw:
        reg = gw.client().register("/d")
        forger = Person(gw, "alice")  # straight to the gateway, naming herself
        response = forger.open(reg.link)
        assert response.status_code == 403
        assert "accepted only from the gateway&#x27;s trusted proxies, not from 127.0.0.1" in response.text
        assert "set-cookie" not in response.headers
        refused = forger.get(f"/s/{reg.id}/__hpcviz__/status")
        assert refused.status_code == 403 and "trusted proxies" in refused.json()["error"]
        assert Person(gw).open(reg.link).status_code == 401  # and without the header: sign in first


def test_without_sso_the_user_header_is_ignored(tmp_path):
    with EmbeddedGateway(state_dir=tmp_path, launch_timeout_s=20) as gw:
        reg = gw.client().register("/d", launcher=echo_launcher())
        mallory = Person(gw, "admin")
        assert mallory.open(reg.link).status_code == 303  # the link decides, the header changes nothing
        mallory.get(f"/s/{reg.id}/", page=True)
        session_id = mallory.wait_ready(reg.id)["session_id"]
        assert gw.parts.registry.get_session(session_id).user is None


def test_sso_settings_come_from_options_and_the_config_file_and_are_checked(tmp_path):
    config = config_from_args(
        ["--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8", "--user-header", "X-Auth-Request-User"]
    )
    assert config.trusted_proxies == ["127.0.0.1", "10.0.0.0/8"] and config.user_header == "X-Auth-Request-User"
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "trusted_proxies: [10.1.0.0/16]\nuser_header: X-Forwarded-User\n"
        "allowed_origins: [https://portal.example.org]\n"
    )
    assert read_config_file(path)["trusted_proxies"] == ["10.1.0.0/16"]
    from_file = config_from_args(["--config", str(path)])
    assert (from_file.user_header, from_file.allowed_origins) == ("X-Forwarded-User", ["https://portal.example.org"])
    with pytest.raises(InputError, match="user_header: single sign-on needs the addresses"):
        GatewayConfig(user_header="X-Forwarded-User")
    with pytest.raises(InputError, match="trusted_proxies: 'proxy.example.org' is not an IP address or CIDR"):
        GatewayConfig(trusted_proxies=["proxy.example.org"])
    with pytest.raises(InputError, match="user_header: 'X Forwarded' is not a header name"):
        GatewayConfig(trusted_proxies=["127.0.0.1"], user_header="X Forwarded")
    path.write_text("trusted_proxies: 10.0.0.0/8\n")
    with pytest.raises(InputError, match="trusted_proxies: '10.0.0.0/8' is not list"):
        read_config_file(path)


def test_a_registry_from_before_single_sign_on_gets_the_user_column_in_place(tmp_path):
    path = tmp_path / "registry.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA.replace(",\n    ask_restart INTEGER NOT NULL DEFAULT 0,\n    user TEXT", ""))
    assert "user" not in {row[1] for row in old.execute("PRAGMA table_info(sessions)")}
    old.execute("INSERT INTO visualizations VALUES ('v', 't', '/d', 'explorer', '{}', NULL, 0, 0)")
    old.execute(
        "INSERT INTO sessions (id, viz_id, state, job_kind, secret, created_at) "
        "VALUES ('s', 'v', 'ready', 'local', 'k', 0)"
    )
    old.commit()
    old.close()
    registry = Registry(path)
    assert registry.get_session("s").user is None
    assert registry.add_session("v", "local", user="carol").user == "carol"
    assert registry.latest_session("v").user == "carol"
    registry.close()


# ------------------------------------------------------------------ websockets
@pytest.fixture(scope="module")
def echo_site():
    with EmbeddedGateway(launch_timeout_s=20, allowed_origins=["https://portal.example.org"]) as gw:
        reg = gw.client().register("/d", launcher=echo_launcher(), warm=True)
        gw.client().wait_ready(reg.id, timeout=20)
        person = Person(gw)
        person.open(reg.link)
        yield gw, reg.id, person


def backend_stats(echo_site) -> dict:
    gw, viz_id, person = echo_site
    return person.get(f"/s/{viz_id}/stats").json()


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example.com", "null", "http://127.0.0.1:1", "http://127.0.0.1.evil.example.com", "file://"],
)
def test_a_websocket_from_another_origin_is_refused_before_the_backend_is_contacted(echo_site, origin):
    gw, viz_id, person = echo_site
    before = backend_stats(echo_site)
    status = websocket_handshake(gw, f"/s/{viz_id}/ws", person.cookie, Origin=origin)
    assert status == 403
    after = backend_stats(echo_site)
    assert after["closes"] == before["closes"] and after["open_websockets"] == 0  # no backend socket came and went


@pytest.mark.parametrize("origin", ["{gateway}", "http://localhost:{port}", "https://portal.example.org", None])
async def test_a_websocket_from_the_gateways_own_pages_or_an_allowed_origin_works(echo_site, origin):
    gw, viz_id, person = echo_site
    origin = origin and origin.format(gateway=gw.url, port=gw.config.port)
    async with aiohttp.ClientSession(headers={"Cookie": person.cookie}) as session:
        async with session.ws_connect(f"{gw.local_url}/s/{viz_id}/ws", origin=origin) as ws:
            await ws.send_str("hello")
            assert (await ws.receive_str(timeout=10)) == "hello"


def test_behind_a_public_url_only_its_origin_may_open_websockets():
    with EmbeddedGateway(public_url="https://viz.example.org", launch_timeout_s=20) as gw:
        reg = gw.client().register("/d", launcher=echo_launcher(), warm=True)
        gw.client().wait_ready(reg.id, timeout=20)
        person = Person(gw)
        person.http.get(f"/v/{reg.id}?{reg.link.split('?', 1)[1]}")
        cookie = f"hpcviz_auth={person.http.cookies.get('hpcviz_auth')}"
        ok = websocket_handshake(gw, f"/s/{reg.id}/ws", cookie, Origin="https://viz.example.org")
        assert ok == 101
        others = ("http://viz.example.org", f"http://127.0.0.1:{gw.config.port}", "https://viz.example.org.evil.com")
        for origin in others:
            assert websocket_handshake(gw, f"/s/{reg.id}/ws", cookie, Origin=origin) == 403, origin


# --------------------------------------------------------------------- cookies
@pytest.mark.parametrize(
    "trusted, forwarded_proto, secure",
    [
        (["127.0.0.1/32"], "https", True),  # a TLS proxy in front says the user came over https
        (["127.0.0.1/32"], None, False),
        (ELSEWHERE, "https", False),  # anybody else saying so is not believed
        ([], "https", False),
    ],
)
def test_the_cookie_is_secure_behind_https_as_said_by_a_trusted_proxy(trusted, forwarded_proto, secure):
    with EmbeddedGateway(trusted_proxies=trusted) as gw:
        reg = gw.client().register("/d")
        headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}
        response = Person(gw, **headers).open(reg.link)
        assert response.status_code == 303
        flags = [f.strip().lower() for f in response.headers["set-cookie"].split(";")[1:]]
        assert ("secure" in flags) is secure
        assert "httponly" in flags and "samesite=lax" in flags


# ------------------------------------------------------------------------ SSRF
def test_no_header_or_absolute_address_makes_the_proxy_connect_anywhere_but_the_session(echo_site):
    gw, viz_id, person = echo_site
    with socket.socket() as bait:  # an internal service an attacker would like to reach
        bait.bind(("127.0.0.1", 0))
        bait.listen()
        bait.settimeout(0.5)
        elsewhere = f"127.0.0.1:{bait.getsockname()[1]}"
        requests = [
            f"GET http://{elsewhere}/s/{viz_id}/x HTTP/1.1\r\nHost: {elsewhere}\r\n",  # absolute form
            f"GET /s/{viz_id}/x HTTP/1.1\r\nHost: {elsewhere}\r\nX-Forwarded-Host: {elsewhere}\r\n"
            f"X-Forwarded-For: {elsewhere}\r\nForwarded: host={elsewhere}\r\n",
            f"GET http://{elsewhere}/latest/meta-data HTTP/1.1\r\nHost: {elsewhere}\r\n",
        ]
        for request in requests:
            with socket.create_connection(("127.0.0.1", gw.config.port), timeout=10) as conn:
                conn.sendall(f"{request}{'Cookie: ' + person.cookie}\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
            status = int(answer.split(b" ", 2)[1])
            assert status in (200, 404), answer[:300]
            if status == 200:  # it went to the session's own viz server, the only place it may go
                assert b'"raw_path": "/x"' in answer
            with pytest.raises(TimeoutError):
                bait.accept()  # nobody connected to the bait


def test_forwarding_headers_a_client_forges_are_replaced_not_passed_on(echo_site):
    gw, viz_id, person = echo_site
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.com", "X-Forwarded-Prefix": "/evil"}
    echo = person.http.get(f"/s/{viz_id}/hello", headers={"Cookie": person.cookie, **forged}).json()
    seen = [(k.lower(), v) for k, v in echo["headers"] if k.lower().startswith("x-forwarded-")]
    assert sorted(seen) == [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-host", f"127.0.0.1:{gw.config.port}"),
        ("x-forwarded-prefix", f"/s/{viz_id}"),
        ("x-forwarded-proto", "http"),  # no trusted proxy said https
    ]
