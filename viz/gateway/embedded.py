"""A gateway inside your own process: for ``hpcviz demo``, notebooks and tests.

``EmbeddedGateway`` runs :func:`create_app` on a free port of 127.0.0.1 in a
background thread with its own event loop. Stopping it stops the viz
servers it launched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from prefect_hpcviz.viz.errors import HpcvizError
from prefect_hpcviz.viz.gateway.app import PARTS, GatewayParts, RedactingAccessLogger, create_app
from prefect_hpcviz.viz.gateway.client import GatewayClient
from prefect_hpcviz.viz.gateway.config import GatewayConfig, url_host


class EmbeddedGateway:
    """Run a gateway in a background thread.

    Args:
        config: settings. It listens on ``config.host`` and ``config.port``
            (port 0: a free port, written back into ``config.port``). Without
            a config it listens on a free port of 127.0.0.1 and keeps its state
            in a temporary folder deleted on stop.
        **overrides: GatewayConfig fields to change, e.g. ``idle_timeout_s=60``.

    Example:
        >>> with EmbeddedGateway() as gateway:
        ...     reg = gateway.client().register("/data/run1/reduced", app="explorer")
        ...     print(reg.link.startswith(gateway.url))
        True
    """

    def __init__(self, config: GatewayConfig | None = None, **overrides: Any) -> None:
        self._own_state_dir: Path | None = None
        if config is None:
            overrides.setdefault("port", 0)
            if "state_dir" not in overrides:
                self._own_state_dir = Path(tempfile.mkdtemp(prefix="hpcviz-gateway-"))
                overrides["state_dir"] = self._own_state_dir
            config = GatewayConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._parts: GatewayParts | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ public
    @property
    def url(self) -> str:
        """Base URL of the running gateway (its public_url if one was set)."""
        return self.config.public_base

    @property
    def local_url(self) -> str:
        """Where it really listens (``http://127.0.0.1:<port>`` when bound to all interfaces)."""
        return f"http://{url_host(self.config.host)}:{self.config.port}"

    @property
    def admin_token(self) -> str:
        """The REST API's bearer token."""
        return self.config.resolve_admin_token()

    @property
    def parts(self) -> GatewayParts:
        """Registry, session manager etc. of the running gateway (for diagnostics)."""
        if self._parts is None:
            raise HpcvizError("the embedded gateway is not running; call start() first")
        return self._parts

    def client(self, **kwargs: Any) -> GatewayClient:
        """A GatewayClient for this gateway (admin token filled in)."""
        return GatewayClient(self.local_url, self.admin_token, **kwargs)

    def start(self) -> "EmbeddedGateway":
        """Start serving; returns when the gateway accepts connections."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="hpcviz-gateway", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise HpcvizError(f"the embedded gateway did not start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 30.0, *, stop_sessions: bool = True) -> None:
        """Stop the viz servers this gateway launched (unless told not to), then the gateway.

        ``stop_sessions=False`` leaves them running, as a gateway restart would:
        a new gateway on the same state_dir picks them up.
        """
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(stop_sessions), self._loop)
        try:
            future.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None
            if self._own_state_dir is not None:
                shutil.rmtree(self._own_state_dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedGateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- thread
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        host = self.config.host or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, self.config.port))
        except OSError as exc:
            sock.close()
            raise HpcvizError(
                f"{host}:{self.config.port}: cannot listen there ({exc.strerror}). "
                "Pick another port, or port 0 for any free one."
            ) from exc
        self.config.port = sock.getsockname()[1]
        app = create_app(self.config)
        self._parts = app[PARTS]
        self._runner = web.AppRunner(
            app, shutdown_timeout=2.0, handle_signals=False, access_log_class=RedactingAccessLogger
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self, stop_sessions: bool) -> None:
        if self._parts is not None and stop_sessions:
            sessions = self._parts.sessions
            await sessions.stop_all(sessions.launched, "the gateway stopped")
        if self._runner is not None:
            await self._runner.cleanup()
