"""The viz server's end of a reverse connection: dial the gateway, carry its streams to the app.

For compute nodes that accept no inbound connections (``serve --reverse``; the
protocol is described in :mod:`prefect_hpcviz.viz.gateway.reverse_tunnel`). The
app listens on the node's loopback only; this opens the control websocket to
the gateway and, for every ``{"open": N}`` on it, dials stream N and copies
bytes between it and a new connection to the app.

Example:
    >>> tunnel_url_for("https://gw.example.org/api/sessions/ab12/ready")
    'https://gw.example.org/api/sessions/ab12/tunnel'
    >>> # reason = await hold_tunnel(tunnel_url, key, app_port)   # returns when the session ended
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp

from prefect_hpcviz.viz.tunnel_pipe import CONTROL_HEARTBEAT_S, MAX_MESSAGE, READ_CHUNK, SESSION_ENDED, pipe_stream

log = logging.getLogger("hpcviz.serve")


class TunnelRefused(Exception):
    """The gateway would not take the reverse connection (wrong key, session ended) or never answered."""


def tunnel_url_for(report_url: str) -> str:
    """The control websocket's URL next to a session's ready-report URL (``.../ready`` -> ``.../tunnel``)."""
    base, _, last = report_url.rstrip("/").rpartition("/")
    if last != "ready" or not base:
        raise ValueError(f"{report_url!r} does not end in /ready; give the gateway's report URL")
    return f"{base}/tunnel"


async def hold_tunnel(
    tunnel_url: str,
    key: str,
    app_port: int,
    *,
    connect_timeout: float = 30.0,
    redial_timeout: float = 120.0,
) -> str:
    """Dial the gateway and serve its streams until the session ends; return why it ended.

    A connection that drops for any other reason (the gateway restarting, a
    network break) is dialed again: the next gateway takes the session back,
    or refuses it because it ended meanwhile (then this returns).

    Args:
        tunnel_url: the session's control websocket URL (http(s) or ws(s)).
        key: the session key (sent as ``Authorization: Bearer``).
        app_port: the app's port on this machine's loopback.
        connect_timeout: keep retrying the first connection this long (the
            gateway may be restarting, the network coming up).
        redial_timeout: after a drop, keep dialing again this long.

    Raises:
        TunnelRefused: the first connection was refused (4xx) or not possible in time.
    """
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as http:
        control = await _dial_control(http, tunnel_url, headers, connect_timeout)
        while True:
            log.info("reverse connection to %s open", tunnel_url)
            await _serve_streams(http, control, tunnel_url, headers, app_port)
            if control.close_code == SESSION_ENDED:
                return "the gateway ended the session"
            log.warning("reverse connection lost (close code %s); dialing again", control.close_code)
            try:
                control = await _dial_control(http, tunnel_url, headers, redial_timeout)
            except TunnelRefused as exc:
                return f"the reverse connection was lost and not taken back ({exc})"


async def _serve_streams(http: aiohttp.ClientSession, control, tunnel_url: str, headers: dict, app_port: int) -> None:
    """Open a stream for every ``{"open": N}`` until the control websocket closes."""
    streams: set[asyncio.Task] = set()
    try:
        async for message in control:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            number = json.loads(message.data).get("open")
            if isinstance(number, int):
                task = asyncio.ensure_future(_carry(http, f"{tunnel_url}/streams/{number}", headers, app_port))
                streams.add(task)
                task.add_done_callback(streams.discard)
    finally:
        for task in list(streams):
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)


async def _dial_control(http: aiohttp.ClientSession, url: str, headers: dict, timeout: float):
    deadline = time.monotonic() + timeout
    delay, problem = 0.1, ""  # at most 1 s apart: a restarted gateway is found back quickly
    while True:
        try:
            return await http.ws_connect(url, headers=headers, heartbeat=CONTROL_HEARTBEAT_S)
        except aiohttp.WSServerHandshakeError as exc:
            if 400 <= exc.status < 500 and exc.status not in (408, 429):
                raise TunnelRefused(f"{url}: the gateway refused the reverse connection (HTTP {exc.status})") from None
            problem = f"HTTP {exc.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() + delay > deadline:
            raise TunnelRefused(f"{url}: the gateway was not reachable for {timeout:g} s ({problem})")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def _carry(http: aiohttp.ClientSession, url: str, headers: dict, app_port: int) -> None:
    """One stream: a connection to the app on loopback, piped into the stream websocket."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app_port, limit=READ_CHUNK)
    except OSError as exc:
        log.warning("reverse stream: the app on 127.0.0.1:%d refused a connection (%s)", app_port, exc)
        return
    try:
        ws = await http.ws_connect(url, headers=headers, max_msg_size=MAX_MESSAGE, autoping=True)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        log.warning("reverse stream %s could not be opened (%s)", url, exc)
        writer.close()
        return
    await pipe_stream(ws, reader, writer)
