"""The gateway's ReverseProxy alone, in a process of its own, for tests that watch its memory.

    python bare_proxy.py BACKEND_PORT {uvloop,asyncio}

Forwards every request and websocket to 127.0.0.1:BACKEND_PORT and prints
the port it listens on as its first line of output.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from aiohttp import web

from prefect_hpcviz.viz.gateway.proxy import ReverseProxy, build_target


async def serve(backend_port: int) -> None:
    proxy = ReverseProxy()

    async def handle(request: web.Request) -> web.StreamResponse:
        target = build_target("127.0.0.1", backend_port, request.raw_path.partition("?")[0])
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await proxy.websocket(request, target)
        return await proxy.http(request, target)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await runner.cleanup()


def main() -> None:
    backend_port, loop = int(sys.argv[1]), sys.argv[2]
    if loop == "uvloop":
        import uvloop

        uvloop.run(serve(backend_port))
    else:
        asyncio.run(serve(backend_port))


if __name__ == "__main__":
    main()
