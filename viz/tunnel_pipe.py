"""Bytes between one TCP connection and one websocket: a stream of the reverse connection.

Both ends of a reverse tunnel use it (see :mod:`prefect_hpcviz.viz.gateway.reverse_tunnel`
for the gateway's end, :mod:`prefect_hpcviz.viz.reverse_dial` for the viz
server's): every TCP connection is carried by a websocket of its own, TCP bytes
as binary messages, in order, one message per read. A websocket per stream
keeps this simple and robust: websockets and TCP already do the framing,
ordering and flow control (a slow reader stops the writer at both hops), and a
stream that breaks cannot stall the others.

Either side ending ends the stream: end of file from the TCP side closes the
websocket; the websocket closing (after its last message was written to the
TCP side) closes the TCP connection.

Example:
    >>> # reader, writer = await asyncio.open_connection("127.0.0.1", app_port)
    >>> # await pipe_stream(ws, reader, writer)      # returns when either side ended
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType

READ_CHUNK = 256 * 1024
"""Bytes read from the TCP side per websocket message."""
MAX_MESSAGE = READ_CHUNK * 4
"""The largest websocket message a stream accepts (its peer sends at most READ_CHUNK)."""
CONTROL_HEARTBEAT_S = 20.0
"""Ping interval of the control websocket: a dead peer (a node that vanished) is noticed."""
SESSION_ENDED = 4000
"""Close code of a control websocket whose session ended: the server stops."""
GATEWAY_RESTARTING = 4012
"""Close code of a control websocket the gateway closed to restart: the server dials again."""


async def pipe_stream(ws: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes both ways between ``ws`` (aiohttp server or client websocket) and a TCP stream.

    Returns once either side has ended; both are closed then.
    """

    async def tcp_to_ws() -> None:
        while data := await reader.read(READ_CHUNK):
            await ws.send_bytes(data)

    async def ws_to_tcp() -> None:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                return  # text has no meaning on a stream; errors and closes end it
            writer.write(message.data)
            await writer.drain()

    tasks = [asyncio.ensure_future(tcp_to_ws()), asyncio.ensure_future(ws_to_tcp())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await ws.close()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
