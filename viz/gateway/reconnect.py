"""Bring an open app page back after its websocket drops (a gateway restart, a network blip).

trame's own client retries only when the page address carries
``?reconnect=auto``, gives up after ten tries half a second apart, and its
retries go to a lower-cased copy of the websocket URL (``/s/<Id>/ws`` becomes
``/s/<id>/ws``), which the cookie's path no longer matches. So the gateway
adds one small script of its own to the app's HTML page: when a websocket
that was open closes because the gateway went away (close code 1006, the
connection was lost, or 1012, the gateway restarts), it polls
``__hpcviz__/status`` with growing pauses (0.5 s up to 5 s) until the gateway
answers, then reloads the page. The viz server kept its state (time step,
field, camera), so the reloaded page shows the view as it was; if the server
failed meanwhile, the reload shows the page that says why and offers "Start
again". A session that was stopped (idle, revoked, by an operator: close
code 1001, or status "stopped") is not reloaded: that would start a new
server for a tab nobody may look at.

Example:
    >>> inject_script(b"<html><head><title>x</title></head></html>", "__hpcviz__/reconnect.js")[:60]
    b'<html><head><script src="__hpcviz__/reconnect.js"></script><'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import aiohttp
from aiohttp import web
from yarl import URL

from prefect_hpcviz.viz.gateway.proxy import BackendUnavailable

SCRIPT_NAME = "reconnect.js"

SCRIPT = """\
// hpcviz gateway: when this page's websocket drops, wait for the gateway and reload the page.
// window.hpcvizReconnect says what it did: "waiting", "reloading" or "not reloading: <why>".
(() => {
  const status = new URL("status", document.currentScript.src).href;
  const Native = window.WebSocket;
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const decide = (what) => { window.hpcvizReconnect = what; };
  async function reloadWhenBack() {
    for (let pause = 500; ; pause = Math.min(pause * 1.5, 5000)) {
      await sleep(pause);
      let answer;
      try {
        answer = await fetch(status, { cache: "no-store", credentials: "same-origin" });
      } catch (e) { continue; }  // the gateway is not back yet
      if (answer.status >= 500) continue;  // nor behind a proxy that answers for it
      const state = answer.ok ? (await answer.json()).state : null;
      if (state === "stopped") {  // a reload would start a new server for a tab nobody may look at
        return decide("not reloading: the session was stopped");
      }
      decide("reloading");
      return window.location.reload();
    }
  }
  class WatchedWebSocket extends Native {
    constructor(...args) {
      super(...args);
      let opened = false;
      this.addEventListener("open", () => { opened = true; });
      this.addEventListener("close", (event) => {
        window.hpcvizClosed = event.code;
        if (!opened || window.hpcvizReconnect) return;
        if (event.code === 1000 || event.code === 1001) {  // the gateway (or the app) ended it on purpose
          return decide("not reloading: the session was ended (" + event.code + ")");
        }
        decide("waiting");  // 1006: the connection was lost; 1012: the gateway restarts
        reloadWhenBack();
      });
    }
  }
  window.WebSocket = WatchedWebSocket;
})();
"""

_HEAD = re.compile(rb"<head[^>]*>", re.IGNORECASE)
_FORWARDED = ("Accept", "Accept-Language", "User-Agent")
_KEPT = ("Content-Type", "Content-Language", "Vary")


def inject_script(html: bytes, *srcs: str) -> bytes:
    """``html`` with ``<script src=SRC>`` tags, in order, first in its head (or first of all when it has none)."""
    tag = "".join(f'<script src="{src}"></script>' for src in srcs).encode()
    match = _HEAD.search(html)
    at = match.end() if match else 0
    return html[:at] + tag + html[at:]


def script_response() -> web.Response:
    """The script itself (the gateway serves it under ``/s/<id>/__hpcviz__/reconnect.js``)."""
    return web.Response(
        text=SCRIPT, content_type="application/javascript", headers={"Cache-Control": "no-cache"}
    )


async def fetch_page(
    request: web.Request, target: URL, headers: dict[str, str], script_srcs: Sequence[str], drop_cookie: str
) -> web.Response:
    """GET the app's HTML page from its viz server and answer with the scripts added
    (this one and the gateway's others, e.g. end_notice.py's).

    Not an HTML page (an app that answers JSON, an error): passed on unchanged.
    Raises BackendUnavailable when the viz server cannot be reached.
    """
    send = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
    send.update(headers)
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout) as client:
            async with client.get(target, headers=send, allow_redirects=False) as answer:
                body = await answer.read()
                status, answer_headers = answer.status, answer.headers
    except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
        raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if status == 200 and answer_headers.get("Content-Type", "").startswith("text/html"):
        body = inject_script(body, *script_srcs)
    response = web.Response(status=status, body=body, headers={"Cache-Control": "no-store"})
    for name in _KEPT:
        if name in answer_headers:
            response.headers[name] = answer_headers[name]
    if "Location" in answer_headers:
        response.headers["Location"] = answer_headers["Location"]
    for cookie in answer_headers.getall("Set-Cookie", []):
        if cookie.split("=", 1)[0].strip() != drop_cookie:
            response.headers.add("Set-Cookie", cookie)
    return response
