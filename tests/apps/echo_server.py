"""A tiny viz-server stand-in for gateway tests: HTTP echo + websocket echo.

Behaves like ``prefect_hpcviz.viz.serve`` where the gateway can tell:
binds port 0, then POSTs {"host", "port"} to --report-url with
``Authorization: Bearer $HPCVIZ_SESSION_KEY`` (retrying while the gateway is
not reachable); a refused report is printed and ends the process (exit 3).

Routes:
  /ws            websocket echo (subprotocols echo.v1, echo.v2); text
                 "close <code> <reason>" makes the server close with that code
  /wslink        decodes wslink chunks like a wslink server; answers each whole
                 message with JSON text {"method", "secret_ok", "sha256"}
  /set-cookie    two Set-Cookie headers
  /redirect      302 to /elsewhere
  /gzip          a gzip-encoded body (Content-Encoding: gzip)
  /big?n=N       N bytes, streamed in chunks
  /exit          answers, then the process exits (a server that dies mid-session)
  /stats         {"open_websockets", "closes": [[who, code, reason], ...]}
  anything else  JSON echo of method, raw path, headers, body length + sha256

Like serve.py it exits after --idle-timeout seconds without requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

from aiohttp import WSMsgType, web
from wslink.chunking import UnChunker

STATS = {"open_websockets": 0, "closes": []}
LAST_REQUEST = [time.monotonic()]


@web.middleware
async def note_activity(request: web.Request, handler):
    LAST_REQUEST[0] = time.monotonic()
    return await handler(request)


async def exit_when_idle(seconds: float) -> None:
    """Like serve.py: end when nobody has asked anything for ``seconds`` (and no websocket is open)."""
    while True:
        await asyncio.sleep(min(seconds, 5))
        if STATS["open_websockets"] == 0 and time.monotonic() - LAST_REQUEST[0] > seconds:
            print(f"idle for {seconds:g} s, exiting", flush=True)
            return


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "app": request.app["args"].app,
            "data": request.app["args"].data,
        }
    )


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(
        protocols=("echo.v1", "echo.v2"), max_msg_size=64 * 1024 * 1024, autoclose=False
    )
    await ws.prepare(request)
    STATS["open_websockets"] += 1
    try:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close "):
                    _, code, reason = msg.data.split(" ", 2)
                    await ws.close(code=int(code), message=reason.encode())
                    STATS["closes"].append(["server", int(code), reason])
                    break
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                STATS["closes"].append(["client", msg.data, msg.extra])
                await ws.close(code=msg.data, message=(msg.extra or "").encode())
                break
            else:
                STATS["closes"].append(["gone", None, ""])
                break
    finally:
        STATS["open_websockets"] -= 1
    return ws


async def ws_wslink(request: web.Request) -> web.WebSocketResponse:
    key = os.environ.get("HPCVIZ_SESSION_KEY", "")
    ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
    await ws.prepare(request)
    unchunker = UnChunker()  # refuses > 512 bytes before the hello, like wslink
    async for msg in ws:
        if msg.type is not WSMsgType.BINARY:
            continue
        sha = hashlib.sha256(msg.data).hexdigest()
        try:
            message = unchunker.process_chunk(msg.data)
        except ValueError as exc:
            await ws.send_str(json.dumps({"error": str(exc), "sha256": sha}))
            continue
        if message is None:
            continue
        args = message.get("args") or [{}]
        secret = args[0].get("secret") if isinstance(args[0], dict) else None
        if message.get("method") == "wslink.hello" and secret == key:
            unchunker.set_max_message_size(4 * 1024**3)
        await ws.send_str(
            json.dumps({"method": message.get("method"), "secret_ok": secret == key, "sha256": sha})
        )
    return ws


async def set_cookie(request: web.Request) -> web.Response:
    response = web.Response(text="cookies")
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    return response


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/elsewhere"})


async def gzipped(request: web.Request) -> web.Response:
    body = gzip.compress(b"hello gzip " * 100)
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


async def big(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "0"))
    response = web.StreamResponse()
    await response.prepare(request)
    chunk = b"x" * 65536
    while n > 0:
        await response.write(chunk[: min(n, len(chunk))])
        n -= len(chunk)
    await response.write_eof()
    return response


async def exit_now(request: web.Request) -> web.Response:
    asyncio.get_running_loop().call_later(0.05, os._exit, 0)
    return web.Response(text="bye")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(STATS)


def report(url: str, host: str, port: int, key: str) -> int:
    """POST the ready report; 0 when accepted, else the exit code to end with."""
    body = json.dumps({"host": host, "port": port}).encode()
    delay = 0.05
    for _ in range(60):
        req = urllib.request.Request(
            url, data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                print(f"ready report accepted: {response.status}", flush=True)
                return 0
        except urllib.error.HTTPError as exc:
            print(f"ready report refused: {exc.code} {exc.read().decode(errors='replace')}", flush=True)
            return 3
        except OSError as exc:
            print(f"gateway not reachable yet: {exc}", flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    return 4


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--report-url", required=True)
    p.add_argument("--data", default="")
    p.add_argument("--app", default="echo")
    p.add_argument("--idle-timeout", default="0")
    p.add_argument("--report-host", default=None, help="host to report instead of the bound one")
    p.add_argument("--ready-delay", type=float, default=0.0, help="seconds to wait before reporting")
    p.add_argument("--reverse", action="store_true", help="dial the gateway instead (like serve --reverse)")
    args = p.parse_args()
    key = os.environ["HPCVIZ_SESSION_KEY"]

    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[note_activity])
    app["args"] = args
    app.router.add_get("/ws", ws_echo)
    app.router.add_get("/wslink", ws_wslink)
    app.router.add_get("/set-cookie", set_cookie)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/big", big)
    app.router.add_get("/exit", exit_now)
    app.router.add_get("/stats", stats)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    port = sock.getsockname()[1]
    print(f"echo server on 127.0.0.1:{port} serving {args.data!r}", flush=True)
    await asyncio.sleep(args.ready_delay)  # a slow app start, so the waiting page shows
    if args.reverse:
        from prefect_hpcviz.viz.reverse_dial import hold_tunnel, tunnel_url_for

        reason = await hold_tunnel(tunnel_url_for(args.report_url), key, port)
        print(f"reverse connection ended: {reason}", flush=True)
        await runner.cleanup()
        return 0
    code = await asyncio.to_thread(report, args.report_url, args.report_host or "127.0.0.1", port, key)
    if code:
        await runner.cleanup()
        return code
    idle = float(args.idle_timeout)
    await (exit_when_idle(idle) if idle > 0 else asyncio.Event().wait())
    await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
