"""Reverse mode: viz servers on nodes that accept no inbound connections dial the gateway.

A launcher with ``reverse: true`` starts ``serve --reverse``. Instead of
reporting ``{host, port}``, the server opens a *control* websocket to the
gateway, authenticated with its session key::

    GET {internal_url}/api/sessions/<sid>/tunnel            Authorization: Bearer KEY

The gateway then listens on ``127.0.0.1:<ephemeral port>`` for that session
(loopback only) and marks the session ready at that address, so routing and
the proxy work unchanged. Every TCP connection the proxy makes to that port
becomes one stream: the gateway sends ``{"open": N}`` on the control
websocket; the server dials ``.../tunnel/streams/N`` (same key), connects to
its app on its own loopback and copies bytes both ways
(:func:`prefect_hpcviz.viz.tunnel_pipe.pipe_stream`).

The control websocket closing (the node died, its network broke) is a viz
server that died: the session ends with the reason and the page offers
"Start again". Stopping a session closes its tunnel and its port (close code
``SESSION_ENDED``: the server exits). A gateway shutting down closes every
tunnel with ``GATEWAY_RESTARTING``: the servers dial again, and the next
gateway takes a ready session's tunnel back at a new port. A tunnel for an
unknown or ended session, or with a wrong key, is refused (403).

Example:
    >>> # tunnels = ReverseTunnels(sessions); tunnels.add_to(app.router)
    >>> # ... at shutdown: await tunnels.close_all()
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
from dataclasses import dataclass, field

from aiohttp import web

from prefect_hpcviz.viz.gateway.api import bearer_token
from prefect_hpcviz.viz.gateway.launch import ReadyRejected, SessionManager
from prefect_hpcviz.viz.tunnel_pipe import (
    CONTROL_HEARTBEAT_S,
    GATEWAY_RESTARTING,
    MAX_MESSAGE,
    READ_CHUNK,
    SESSION_ENDED,
    pipe_stream,
)

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


@dataclass
class _Stream:
    """One proxied TCP connection waiting for (then carried by) the server's stream websocket."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    claimed: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    finished: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class _Tunnel:
    """The control websocket of one session and the loopback port the proxy reaches it at."""

    session_id: str
    control: web.WebSocketResponse
    listener: asyncio.Server | None = None
    port: int = 0
    streams: dict[int, _Stream] = field(default_factory=dict)
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))
    closing: bool = False


class ReverseTunnels:
    """The gateway's end of reverse connections, one per session in reverse mode.

    Args:
        sessions: the gateway's session manager (key checks, ready, backend lost).
        stream_timeout_s: how long a proxied connection waits for the server to
            dial its stream before it is dropped.
    """

    def __init__(self, sessions: SessionManager, *, stream_timeout_s: float = 15.0) -> None:
        self.sessions = sessions
        self.stream_timeout_s = stream_timeout_s
        self._tunnels: dict[str, _Tunnel] = {}
        sessions.on_session_end.append(self._session_ended)

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/sessions/{session_id}/tunnel", self.control)
        router.add_get("/api/sessions/{session_id}/tunnel/streams/{number:[0-9]+}", self.stream)

    def port_of(self, session_id: str) -> int | None:
        """The loopback port of a session's open tunnel, or None."""
        tunnel = self._tunnels.get(session_id)
        return tunnel.port if tunnel is not None and not tunnel.closing else None

    # --------------------------------------------------------------- control
    async def control(self, request: web.Request) -> web.StreamResponse:
        """The server's control websocket: open the session's port, mark it ready, hold until it drops."""
        session_id = request.match_info["session_id"]
        if denied := self._refusal(request, session_id):
            return denied
        if session_id in self._tunnels:
            return _refuse(409, f"session {session_id} already has a reverse connection")
        ws = web.WebSocketResponse(heartbeat=CONTROL_HEARTBEAT_S)
        await ws.prepare(request)
        tunnel = self._tunnels[session_id] = _Tunnel(session_id, ws)
        reason = "the viz server's reverse connection closed"
        try:
            tunnel.listener = await asyncio.start_server(
                lambda r, w: self._carry(tunnel, r, w), LOOPBACK, 0, limit=READ_CHUNK
            )
            tunnel.port = tunnel.listener.sockets[0].getsockname()[1]
            key = bearer_token(request) or ""
            try:
                self.sessions.mark_ready(session_id, key, LOOPBACK, tunnel.port, via_tunnel=True)
            except ReadyRejected as exc:  # ended or made ready meanwhile
                await ws.close(code=4000 + exc.status, message=str(exc).encode()[:120])
                return ws
            log.info("session %s: reverse connection from %s, proxied at %s:%d",
                     session_id, request.remote, LOOPBACK, tunnel.port)  # fmt: skip
            async for _ in ws:  # the server sends nothing; reading answers its pings
                pass
            if ws.exception() is not None:
                reason = f"{reason} ({ws.exception()})"
        finally:
            closed_by_us = tunnel.closing
            await self._close(tunnel)
        if not closed_by_us:
            log.warning("session %s: %s", session_id, reason)
            await self.sessions.backend_lost(session_id, reason)
        return ws

    # --------------------------------------------------------------- streams
    async def stream(self, request: web.Request) -> web.StreamResponse:
        """A stream websocket the server dialed for ``{"open": N}``: carry connection N over it."""
        session_id = request.match_info["session_id"]
        if denied := self._refusal(request, session_id):
            return denied
        tunnel = self._tunnels.get(session_id)
        number = int(request.match_info["number"])
        pending = tunnel.streams.get(number) if tunnel is not None else None
        if pending is None or pending.claimed.done():
            return _refuse(404, f"no stream {number} waits on session {session_id}'s reverse connection")
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, autoping=True)
        await ws.prepare(request)
        pending.claimed.set_result(ws)
        try:
            await pipe_stream(ws, pending.reader, pending.writer)
        finally:
            if not pending.finished.done():
                pending.finished.set_result(None)
        return ws

    async def _carry(self, tunnel: _Tunnel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A proxy connection to a session's port: ask the server for a stream, wait until it ends."""
        number = next(tunnel.numbers)
        stream = tunnel.streams[number] = _Stream(reader, writer)
        try:
            await tunnel.control.send_str(json.dumps({"open": number}))
            await asyncio.wait_for(asyncio.shield(stream.claimed), self.stream_timeout_s)
            await stream.finished
        except (asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            log.warning("session %s: stream %d not opened (%s)", tunnel.session_id, number, exc or type(exc).__name__)
        finally:
            tunnel.streams.pop(number, None)
            if not stream.claimed.done():
                stream.claimed.cancel()
                writer.close()

    # -------------------------------------------------------------- closing
    def _session_ended(self, session_id: str) -> None:
        """A session stopped or failed: close its tunnel (the server then exits)."""
        tunnel = self._tunnels.get(session_id)
        if tunnel is not None and not tunnel.closing:
            tunnel.closing = True
            asyncio.ensure_future(self._close(tunnel, SESSION_ENDED, "session ended"))

    async def close_all(self) -> None:
        """Close every tunnel (the gateway is shutting down); sessions are left as they are
        and their servers dial the next gateway."""
        tunnels = list(self._tunnels.values())
        for tunnel in tunnels:
            tunnel.closing = True
        closing = (self._close(t, GATEWAY_RESTARTING, "gateway restarting") for t in tunnels)
        await asyncio.gather(*closing, return_exceptions=True)

    async def _close(self, tunnel: _Tunnel, code: int = SESSION_ENDED, why: str = "session ended") -> None:
        tunnel.closing = True
        if self._tunnels.get(tunnel.session_id) is tunnel:
            del self._tunnels[tunnel.session_id]
        if tunnel.listener is not None:
            tunnel.listener.close()
        for stream in list(tunnel.streams.values()):
            if not stream.claimed.done():  # no server will dial it now: its _carry ends here, not at the timeout
                stream.claimed.cancel()
            stream.writer.close()  # its pipe sees the end and closes the stream's websocket
        if not tunnel.control.closed:
            with contextlib.suppress(Exception):
                await tunnel.control.close(code=code, message=why.encode())

    # ----------------------------------------------------------------- auth
    def _refusal(self, request: web.Request, session_id: str) -> web.Response | None:
        """401 without a key; 403 unless it is the session's and the session is active."""
        key = bearer_token(request)
        if key is None:
            return _refuse(401, "missing session key: send 'Authorization: Bearer <HPCVIZ_SESSION_KEY>'")
        session = self.sessions.registry.get_session(session_id)
        if session is None or not hmac.compare_digest(key.encode(), session.secret.encode()):
            return _refuse(403, f"no session {session_id} with this key")
        if not session.active:
            return _refuse(403, f"session {session_id} is {session.state} ({session.reason}); start a new one")
        return None


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})
