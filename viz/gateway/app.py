"""Wire the gateway together: ``create_app(config)`` returns a ready aiohttp application."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from prefect_hpcviz.viz.gateway import pages
from prefect_hpcviz.viz.gateway.api import ApiRoutes
from prefect_hpcviz.viz.gateway.config import GatewayConfig
from prefect_hpcviz.viz.gateway.launch import SessionManager
from prefect_hpcviz.viz.gateway.proxy import ReverseProxy
from prefect_hpcviz.viz.gateway.registry import Registry
from prefect_hpcviz.viz.gateway.reverse_tunnel import ReverseTunnels
from prefect_hpcviz.viz.gateway.tokens import Signer
from prefect_hpcviz.viz.gateway.viewer import ViewerRoutes, wants_html

log = logging.getLogger(__name__)


@dataclass
class GatewayParts:
    """The pieces of one running gateway (``app[PARTS]``)."""

    config: GatewayConfig
    admin_token: str
    registry: Registry
    signer: Signer
    sessions: SessionManager
    proxy: ReverseProxy
    tunnels: ReverseTunnels


PARTS = web.AppKey("hpcviz_gateway_parts", GatewayParts)


def create_app(config: GatewayConfig) -> web.Application:
    """The gateway as an aiohttp application (state in ``config.state_dir``).

    Background work (culling idle sessions, noticing ended jobs, adopting
    launches of an earlier gateway process) starts with the app and stops
    with it; running sessions are left running, so a restart loses nothing.

    Example:
        >>> from aiohttp import web
        >>> app = create_app(GatewayConfig(port=8765, state_dir="/tmp/hpcviz-doc-gw"))
        >>> # web.run_app(app, host="127.0.0.1", port=8765)
    """
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    admin_token = config.resolve_admin_token()
    registry = Registry(config.state_dir / "registry.sqlite")
    signer = Signer.from_state_dir(config.state_dir)
    sessions = SessionManager(config, registry)
    proxy = ReverseProxy(max_ws_message=config.max_ws_message, traffic=sessions.metrics.traffic)
    tunnels = ReverseTunnels(sessions)
    parts = GatewayParts(config, admin_token, registry, signer, sessions, proxy, tunnels)

    app = web.Application(middlewares=[_readable_errors, _no_dot_segments])
    app[PARTS] = parts
    ApiRoutes(config, admin_token, registry, signer, sessions).add_to(app.router)
    ViewerRoutes(config, registry, signer, sessions, proxy).add_to(app.router)
    tunnels.add_to(app.router)

    async def lifecycle(app: web.Application):
        await sessions.start()
        yield
        await sessions.close()
        await tunnels.close_all()
        await proxy.close()
        registry.close()

    async def close_websockets(app: web.Application) -> None:
        await sessions.close_sockets("the gateway is shutting down")
        await tunnels.close_all()  # reverse connections are websockets too; their servers then exit

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_websockets)
    return app


_TOKEN_IN_QUERY = re.compile(r"((?:^|[?&])token=)[^&]*")


class RedactingAccessLogger(AbstractAccessLogger):
    """Access log lines without link tokens (``?token=`` is replaced by ``<redacted>``).

    Example:
        >>> # web.AppRunner(create_app(config), access_log_class=RedactingAccessLogger)
    """

    @property
    def enabled(self) -> bool:
        """aiohttp skips log() (and its formatting) when INFO is off for this logger."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = _TOKEN_IN_QUERY.sub(r"\1<redacted>", request.raw_path)
        self.logger.info(
            '%s "%s %s" %s %s %.3fs',
            request.remote,
            request.method,
            path,
            response.status,
            response.body_length,
            time,
        )


@web.middleware
async def _no_dot_segments(request: web.Request, handler):
    """Refuse paths with ``.`` or ``..`` segments (also %2e-encoded): nothing escapes /s/<id>/."""
    raw_path = request.raw_path.partition("?")[0]
    if any(unquote(segment) in (".", "..") for segment in raw_path.split("/")):
        message = "paths with '.' or '..' segments are not allowed"
        if wants_html(request):
            return pages.problem_page(400, "Bad address", message[:1].upper() + message[1:] + ".")
        return web.json_response({"error": message}, status=400)
    return await handler(request)


@web.middleware
async def _readable_errors(request: web.Request, handler):
    """Unknown routes and unexpected errors become JSON (or a page), never a bare status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405) and (exc.text or "").startswith(f"{exc.status}:"):
            message = f"{exc.reason}: {request.method} {request.path}"
            if wants_html(request):
                page = pages.problem_page(exc.status, exc.reason, "There is nothing at this address.")
            else:
                page = web.json_response({"error": message}, status=exc.status)
            if "Allow" in exc.headers:  # a 405 says which methods would work (RFC 9110)
                page.headers["Allow"] = exc.headers["Allow"]
            return page
        raise
    except Exception:
        log.exception("error while handling %s %s", request.method, request.path)
        return web.json_response({"error": "internal error in the gateway; see its log"}, status=500)
