"""The documented nginx configuration, as printed there, in front of a real gateway.

The config block is read from docs/gateway.md ("Running it for real"), given a
self-signed certificate and free ports, and run by a real nginx. oauth2-proxy
is played by a small aiohttp app with its ``/oauth2/auth`` contract (202 with
``X-Auth-Request-User`` for a signed-in browser, 401 otherwise). Through it:
TLS, single sign-on, Secure cookies, the app, and a 5 MiB websocket message.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

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


def readme_nginx_config() -> str:
    return doc_block(GATEWAY_DOC, "# /etc/nginx/conf.d/hpcviz.conf")


@pytest.fixture
def nginx_dir(tmp_path: Path) -> Path:
    require(shutil.which("nginx") is not None, "nginx", "apt-get install nginx-light (scripts/setup.sh does)")
    require(shutil.which("openssl") is not None, "openssl", "apt-get install openssl")
    self_signed_certificate(tmp_path, "viz.test")
    return tmp_path


async def test_the_readme_nginx_config_serves_the_gateway_with_tls_sso_and_websockets(nginx_dir):
    auth_runner, auth_port = await oauth2_proxy_stand_in()
    tls_port = free_port()
    public = f"https://127.0.0.1:{tls_port}"
    gw = EmbeddedGateway(
        public_url=public, trusted_proxies=["127.0.0.1/32"], user_header="X-Forwarded-User", launch_timeout_s=20
    )
    await asyncio.to_thread(gw.start)
    config = (
        readme_nginx_config()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
        .replace("/etc/letsencrypt/live/viz.example.org/fullchain.pem", str(nginx_dir / "cert.pem"))
        .replace("/etc/letsencrypt/live/viz.example.org/privkey.pem", str(nginx_dir / "key.pem"))
        .replace("127.0.0.1:8765", f"127.0.0.1:{gw.config.port}")
        .replace("127.0.0.1:4180", f"127.0.0.1:{auth_port}")
    )
    temp = {name: nginx_dir / name for name in ("body", "proxy")}
    (nginx_dir / "nginx.conf").write_text(
        f"daemon off;\npid {nginx_dir}/nginx.pid;\nerror_log {nginx_dir}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {temp['body']};\nproxy_temp_path {temp['proxy']};\n"
        f"{config}\n}}\n"
    )
    nginx = subprocess.Popen(["nginx", "-c", str(nginx_dir / "nginx.conf"), "-p", str(nginx_dir)])
    tls = ssl.create_default_context(cafile=str(nginx_dir / "cert.pem"))
    tls.check_hostname = False
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls), cookie_jar=aiohttp.DummyCookieJar()
        ) as http:
            deadline = asyncio.get_running_loop().time() + 20
            while True:  # nginx accepts connections
                try:
                    async with http.get(f"{public}/healthz") as r:
                        assert r.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    assert nginx.poll() is None, (nginx_dir / "error.log").read_text()
                    assert asyncio.get_running_loop().time() < deadline, "nginx did not start"
                    await asyncio.sleep(0.1)

            admin = {"Authorization": f"Bearer {gw.admin_token}"}
            async with http.post(f"{public}/api/visualizations", json={"data": "/d", "launcher": echo_launcher()},
                                 headers=admin) as r:  # fmt: skip
                assert r.status == 201
                reg = await r.json()
            link = reg["link"][len(public) :]
            async with http.get(f"{public}{link}", allow_redirects=False) as r:
                assert r.status == 200 and "sign in" in await r.text()  # not signed in: the login page
            forged = {"Cookie": "login=alice", "X-Forwarded-User": "mallory"}  # the header is the browser's own
            async with http.get(f"{public}{link}", headers=forged, allow_redirects=False) as r:
                assert r.status == 303
                cookie = r.headers["Set-Cookie"]
                assert "Secure" in cookie and "HttpOnly" in cookie
            alice = {"Cookie": f"login=alice; {cookie.split(';')[0]}", "X-Forwarded-User": "mallory"}
            async with http.get(f"{public}/s/{reg['id']}/", headers={**alice, "Accept": "text/html"}) as r:
                assert r.status == 200
            status = await wait_ready_through(http, f"{public}/s/{reg['id']}/", alice)
            assert gw.parts.registry.get_session(status["session_id"]).user == "alice"
            async with http.get(f"{public}/s/{reg['id']}/hello", headers=alice) as r:
                echo = await r.json()
            seen = {k.lower(): v for k, v in echo["headers"]}
            assert echo["raw_path"] == "/hello" and seen["x-forwarded-user"] == "alice"
            bob = {"Cookie": f"login=bob; {cookie.split(';')[0]}"}
            async with http.get(f"{public}/s/{reg['id']}/hello", headers=bob) as r:
                assert r.status == 403 and "another user" in (await r.json())["error"]

            await assert_websockets_through(http, f"wss://127.0.0.1:{tls_port}/s/{reg['id']}/ws", public, alice)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        await asyncio.to_thread(gw.stop)
        await auth_runner.cleanup()
    assert not re.search(r"\[(emerg|alert|crit)\]", (nginx_dir / "error.log").read_text())
