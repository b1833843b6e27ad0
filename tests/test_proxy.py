"""The reverse proxy: bytes, headers, cookies, websockets and close codes arrive as sent.

One gateway and one echo server (tests/apps/echo_server.py, launched on
click like a real viz server) serve the whole module; each test talks to it
through /s/<id>/ as a browser with the link's cookie would.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import http.client
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgpack
import pytest
from wslink.chunking import UnChunker, generate_chunks
from yarl import URL

from prefect_hpcviz.viz.gateway import EmbeddedGateway

ECHO = Path(__file__).parent / "apps" / "echo_server.py"
LAUNCHER = {
    "kind": "local",
    "options": {
        "grace_s": 1,
        "command": [
            "{python}",
            str(ECHO),
            "--report-url",
            "{report_url}",
            "--data",
            "{data}",
            "--idle-timeout",
            "{idle_timeout}",
        ],
    },
}
MiB = 1024 * 1024


@dataclass
class Site:
    gateway: EmbeddedGateway
    viz_id: str
    cookie: str
    session: dict

    @property
    def app(self) -> str:
        return f"{self.gateway.local_url}/s/{self.viz_id}"

    @property
    def ws_app(self) -> str:
        return self.app.replace("browser://", "ws://")

    def headers(self, **extra: str) -> dict:
        return {"Cookie": self.cookie, **extra}


@pytest.fixture(scope="module")
def site():
    with EmbeddedGateway(launch_timeout_s=20) as gw:
        client = gw.client()
        reg = client.register("/data/run1", app="echo", launcher=LAUNCHER, warm=True)
        session = client.wait_ready(reg.id, timeout=20)
        conn = http.client.HTTPConnection("127.0.0.1", gw.config.port)
        conn.request("GET", f"/v/{reg.id}?{reg.link.split('?', 1)[1]}")
        cookie = conn.getresponse().getheader("Set-Cookie").split(";")[0]
        conn.close()
        yield Site(gw, reg.id, cookie, session)


@pytest.fixture
async def browser(site):
    async with aiohttp.ClientSession(
        headers={"Cookie": site.cookie},
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=0),  # the browser side must not cap at 100 either
    ) as session:
        yield session


async def stats(browser, site) -> dict:
    async with browser.get(f"{site.app}/stats") as r:
        return await r.json()


# ----------------------------------------------------------------------- http
async def test_the_prefix_is_stripped_and_the_raw_path_and_query_arrive_unchanged(browser, site):
    raw = "/a%2Fb%20c/%7Efile;x=1?q=%2F&r=a+b&s=%20"
    async with browser.get(URL(site.app + raw, encoded=True)) as r:
        assert r.status == 200
        assert (await r.json())["raw_path"] == raw


async def test_backend_redirects_are_passed_to_the_browser_not_followed(browser, site):
    async with browser.get(f"{site.app}/redirect", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/elsewhere"


async def test_each_backend_set_cookie_arrives_as_its_own_header(browser, site):
    async with browser.get(f"{site.app}/set-cookie") as r:
        assert r.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]


async def test_compressed_bodies_pass_through_without_being_decompressed(browser, site):
    async with browser.get(f"{site.app}/gzip") as r:
        assert r.headers["Content-Encoding"] == "gzip"
        body = await r.read()
        assert body[:2] == b"\x1f\x8b" and int(r.headers["Content-Length"]) == len(body)
        assert gzip.decompress(body) == b"hello gzip " * 100


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_5_mib_upload_is_streamed_to_the_backend(browser, site, chunked):
    payload = os.urandom(5 * MiB)

    async def chunks():
        for i in range(0, len(payload), 256 * 1024):
            yield payload[i : i + 256 * 1024]

    data = chunks() if chunked else payload
    async with browser.post(f"{site.app}/upload", data=data) as r:
        echo = await r.json()
    assert r.status == 200
    assert echo["body_len"] == len(payload) and echo["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_a_large_download_is_streamed_back_complete(browser, site):
    n = 20 * MiB + 123
    async with browser.get(f"{site.app}/big?n={n}") as r:
        received = 0
        async for chunk in r.content.iter_any():
            received += len(chunk)
    assert received == n


def test_hop_by_hop_headers_are_dropped_and_the_proxy_adds_none_of_its_own(site):
    conn = http.client.HTTPConnection("127.0.0.1", site.gateway.config.port, timeout=10)
    conn.putrequest("GET", f"/s/{site.viz_id}/headers", skip_accept_encoding=True)
    for name, value in [
        ("Cookie", f"{site.cookie}; theme=dark"),
        ("Connection", "keep-alive, X-Private-Hop"),
        ("X-Private-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("X-End-To-End", "kept"),
    ]:
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    headers = {k.lower(): v for k, v in json.loads(response.read())["headers"]}
    conn.close()
    assert headers["x-end-to-end"] == "kept"
    for hop in ("x-private-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in headers
    assert "user-agent" not in headers and "accept-encoding" not in headers  # nothing invented
    assert headers["cookie"] == "theme=dark"  # the gateway's own cookie is stripped
    assert headers["x-forwarded-prefix"] == f"/s/{site.viz_id}"


async def test_head_requests_get_headers_and_no_body(browser, site):
    async with browser.head(f"{site.app}/anything") as r:
        assert r.status == 200 and await r.read() == b""


# ------------------------------------------------------------------ websocket
async def test_websocket_echo_with_a_5_mib_message_and_the_chosen_subprotocol(browser, site):
    async with browser.ws_connect(
        f"{site.ws_app}/ws", protocols=("nope", "echo.v2"), max_msg_size=64 * MiB
    ) as ws:
        assert ws.protocol == "echo.v2"
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=10) == "hello"
        big = os.urandom(5 * MiB)
        await ws.send_bytes(big)
        assert await ws.receive_bytes(timeout=30) == big


async def test_the_backends_close_code_and_reason_reach_the_browser(browser, site):
    async with browser.ws_connect(f"{site.ws_app}/ws", autoclose=False) as ws:
        await ws.send_str("close 4001 dataset unloaded")
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4001, "dataset unloaded")


async def test_the_browsers_close_code_and_reason_reach_the_backend(browser, site):
    async with browser.ws_connect(f"{site.ws_app}/ws") as ws:
        await ws.send_str("ping")
        await ws.receive_str(timeout=10)
        await ws.close(code=4002, message=b"tab closed")
    deadline = time.monotonic() + 5
    while ["client", 4002, "tab closed"] not in (await stats(browser, site))["closes"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_a_browser_that_vanishes_closes_the_backend_side_within_a_second(browser, site):
    before = (await stats(browser, site))["open_websockets"]
    reader, writer = await asyncio.open_connection("127.0.0.1", site.gateway.config.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /s/{site.viz_id}/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {site.cookie}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    deadline = time.monotonic() + 5
    while (await stats(browser, site))["open_websockets"] != before + 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    writer.transport.abort()  # no close frame: the browser just vanished
    vanished = time.monotonic()
    while (await stats(browser, site))["open_websockets"] != before:
        assert time.monotonic() - vanished < 1.0, "backend websocket still open"
        await asyncio.sleep(0.02)


async def test_more_than_a_hundred_websockets_stay_open_at_once(browser, site):
    sockets = await asyncio.gather(*(browser.ws_connect(f"{site.ws_app}/ws") for _ in range(110)))
    try:
        for i, ws in enumerate(sockets):
            await ws.send_str(f"n{i}")
        replies = await asyncio.gather(*(ws.receive_str(timeout=20) for ws in sockets))
        assert replies == [f"n{i}" for i in range(110)]
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


async def test_the_gateway_puts_the_session_key_into_the_wslink_hello(browser, site):
    hello = {
        "wslink": "1.0",
        "id": "system:c0:0",
        "method": "wslink.hello",
        "args": [{"secret": "wslink-secret"}],
        "kwargs": {},
    }
    async with browser.ws_connect(f"{site.ws_app}/wslink") as ws:
        for chunk in generate_chunks(msgpack.packb(hello), 16):
            await ws.send_bytes(chunk)
        reply = json.loads(await ws.receive_str(timeout=10))
        assert reply == {"method": "wslink.hello", "secret_ok": True, "sha256": reply["sha256"]}
        # After the hello, messages pass byte for byte (and may be big now).
        call = {
            "wslink": "1.0",
            "id": "rpc:c0:1",
            "method": "trame.state.update",
            "args": ["x" * 5000],
            "kwargs": {},
        }
        [frame] = generate_chunks(msgpack.packb(call), 0)
        await ws.send_bytes(frame)
        reply = json.loads(await ws.receive_str(timeout=10))
        assert (
            reply["method"] == "trame.state.update" and reply["sha256"] == hashlib.sha256(frame).hexdigest()
        )


async def test_the_browsers_default_secret_alone_does_not_open_the_viz_server(site):
    # Straight to the server, around the gateway: the default secret is refused.
    hello = {
        "wslink": "1.0",
        "id": "system:c0:0",
        "method": "wslink.hello",
        "args": [{"secret": "wslink-secret"}],
        "kwargs": {},
    }
    url = f"ws://{site.session['host']}:{site.session['port']}/wslink"
    async with aiohttp.ClientSession() as direct, direct.ws_connect(url) as ws:
        await ws.send_bytes(next(generate_chunks(msgpack.packb(hello), 0)))
        assert json.loads(await ws.receive_str(timeout=10))["secret_ok"] is False


async def test_websocket_traffic_counts_as_activity_and_keeps_the_session(tmp_path):
    with EmbeddedGateway(idle_timeout_s=0.8, poll_interval_s=0.1, state_dir=tmp_path) as gw:
        client = gw.client()
        reg = client.register("/d", launcher=LAUNCHER, warm=True)
        client.wait_ready(reg.id, timeout=20)
        conn = http.client.HTTPConnection("127.0.0.1", gw.config.port)
        conn.request("GET", reg.link[len(gw.url) :])
        cookie = conn.getresponse().getheader("Set-Cookie").split(";")[0]
        conn.close()
        ws_url = f"ws://127.0.0.1:{gw.config.port}/s/{reg.id}/ws"
        async with aiohttp.ClientSession(headers={"Cookie": cookie}) as s, s.ws_connect(ws_url) as ws:
            end = time.monotonic() + 2.0  # well past the idle limit
            while time.monotonic() < end:
                await ws.send_str("still here")
                assert await ws.receive_str(timeout=5) == "still here"
                await asyncio.sleep(0.2)  # pacing, not waiting for readiness
            assert client.get(reg.id)["session"]["state"] == "ready"


async def _wslink_hello(ws) -> dict:
    """Send trame's hello (with the browser's default secret); return the server's answer."""
    hello = {
        "wslink": "1.0",
        "id": "system:c0:0",
        "method": "wslink.hello",
        "args": [{"secret": "wslink-secret"}],
        "kwargs": {},
    }
    for chunk in generate_chunks(msgpack.packb(hello), 0):
        await ws.send_bytes(chunk)
    unchunker = UnChunker()
    unchunker.set_max_message_size(1 << 30)
    while True:
        msg = await ws.receive(timeout=30)
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        answer = unchunker.process_chunk(msg.data)
        if answer is not None and answer.get("id") == "system:c0:0":
            return answer


async def test_a_real_trame_viz_server_takes_the_browser_in_only_through_the_gateway(
    small_simulation, tmp_path
):
    with EmbeddedGateway(launch_timeout_s=120, state_dir=tmp_path) as gw:
        client = gw.client()
        reg = client.register(
            str(small_simulation), app="explorer"
        )  # the default: python -m prefect_hpcviz.viz.serve
        session = await asyncio.to_thread(client.wait_ready, reg.id, 120)
        conn = http.client.HTTPConnection("127.0.0.1", gw.config.port)
        conn.request("GET", reg.link[len(gw.url) :])
        cookie = conn.getresponse().getheader("Set-Cookie").split(";")[0]
        conn.close()
        async with aiohttp.ClientSession(headers={"Cookie": cookie}) as browser:
            async with browser.get(f"{gw.local_url}/s/{reg.id}/") as page:
                assert page.status == 200 and "text/html" in page.headers["Content-Type"]
            async with browser.ws_connect(f"ws://127.0.0.1:{gw.config.port}/s/{reg.id}/ws") as ws:
                answer = await _wslink_hello(ws)
                assert answer.get("error") is None and answer["result"]["clientID"]
        async with (
            aiohttp.ClientSession() as around,
            around.ws_connect(f"ws://{session['host']}:{session['port']}/ws") as ws,
        ):
            answer = await _wslink_hello(ws)
            assert answer["error"]["message"] == "Authentication failed"
