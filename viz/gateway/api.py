"""The REST API: register visualizations, mint links, launch, revoke; jobs report ready here.

Admin routes take ``Authorization: Bearer <admin token>`` and nothing else
(cookies are never accepted). ``POST /api/sessions/<sid>/ready`` takes the
session's own key. The OpenAPI document is at ``/api/openapi.json``.
``/healthz`` is open; ``/metrics`` needs the admin token unless the config's
``metrics_public`` is set.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import logging
import re
import sqlite3
import time
from typing import Any

from aiohttp import web

from prefect_hpcviz import __version__
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.gateway.config import GatewayConfig
from prefect_hpcviz.viz.gateway.launch import (
    ReadyRejected,
    SessionManager,
    log_lines,
    normalize_launcher,
)
from prefect_hpcviz.viz.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from prefect_hpcviz.viz.gateway.openapi import MAX_LINK_TTL_S, openapi_document
from prefect_hpcviz.viz.gateway.registry import ACTIVE_STATES, Registry, Visualization
from prefect_hpcviz.viz.gateway.tokens import Signer

log = logging.getLogger(__name__)

_APP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CREATE_KEYS = {"data", "app", "title", "launcher", "warm", "link_ttl_s", "view"}


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=status, headers={"Cache-Control": "no-store", **headers}
    )


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat().replace("+00:00", "Z")


class ApiRoutes:
    """Handlers for ``/api``, ``/healthz`` and ``/metrics``."""

    def __init__(
        self,
        config: GatewayConfig,
        admin_token: str,
        registry: Registry,
        signer: Signer,
        sessions: SessionManager,
    ) -> None:
        self.config = config
        self._admin_token = admin_token.encode()
        self.registry = registry
        self.signer = signer
        self.sessions = sessions

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/healthz", self.health)
        router.add_get("/metrics", self.metrics)
        router.add_get("/api/openapi.json", self.openapi)
        router.add_get("/api/visualizations", self.list_visualizations)
        router.add_post("/api/visualizations", self.create)
        router.add_get("/api/visualizations/{viz_id}", self.get)
        router.add_delete("/api/visualizations/{viz_id}", self.delete)
        router.add_post("/api/visualizations/{viz_id}/links", self.new_link)
        router.add_post("/api/visualizations/{viz_id}/launch", self.launch)
        router.add_get("/api/sessions/{session_id}", self.get_session)
        router.add_post("/api/sessions/{session_id}/ready", self.ready)
        router.add_post("/api/sessions/{session_id}/stop", self.stop_session)
        router.add_get("/api/sessions/{session_id}/logs", self.session_logs)
        router.add_post("/api/cull", self.cull)

    # ----------------------------------------------------------------- helpers
    def _admin(self, request: web.Request) -> web.Response | None:
        token = bearer_token(request)
        if token is None:
            return _error(
                401,
                "missing admin token: send 'Authorization: Bearer <admin token>'",
                **{"WWW-Authenticate": 'Bearer realm="hpcviz"'},
            )
        if not hmac.compare_digest(token.encode(), self._admin_token):
            return _error(
                401,
                "wrong admin token: use the one in the gateway's state_dir/admin_token",
                **{"WWW-Authenticate": 'Bearer realm="hpcviz", error="invalid_token"'},
            )
        return None

    def _viz(self, request: web.Request) -> Visualization | web.Response:
        viz = self.registry.get_visualization(request.match_info["viz_id"])
        if viz is None:
            return _error(404, f"no visualization {request.match_info['viz_id']!r}")
        return viz

    def link_payload(self, viz: Visualization, ttl_s: float) -> dict[str, Any]:
        """``{id, link, url, expires_at}`` with a freshly signed link."""
        now = time.time()
        token = self.signer.sign(viz.id, ttl_s=ttl_s, now=now)
        base = self.config.public_base
        expires = int(now + ttl_s)
        return {
            "id": viz.id,
            "link": f"{base}/v/{viz.id}?token={token}",
            "url": f"{base}/s/{viz.id}/",
            "expires_at": _iso(expires),
        }

    def _describe(self, viz: Visualization) -> dict[str, Any]:
        session = self.sessions.current(viz.id)
        return {
            **viz.to_dict(),
            "url": f"{self.config.public_base}/s/{viz.id}/",
            "session": session.to_public() if session else None,
            "status": self.sessions.status(viz.id),
        }

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        if not request.body_exists:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise InputError(
                "request body", "is not JSON", "send a JSON object with Content-Type: application/json"
            ) from None
        if not isinstance(body, dict):
            raise InputError("request body", "is not a JSON object", "send {...}")
        return body

    def _ttl(self, body: dict[str, Any]) -> float:
        ttl = body.get("link_ttl_s")
        if ttl is None:
            return float(self.config.link_ttl_s)
        # "not 0 < ttl <= max" also refuses NaN and Infinity (Python's JSON reader accepts them)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_LINK_TTL_S:
            raise InputError(
                "link_ttl_s",
                f"{ttl!r} is not a number of seconds between 0 and {MAX_LINK_TTL_S} (10 years)",
                "give e.g. 86400 for a day",
            )
        return float(ttl)

    # ---------------------------------------------------------------- handlers
    async def health(self, request: web.Request) -> web.Response:
        """Health (no authentication): the registry answers, and how many sessions are active.

        200 ``{"status": "ok", "registry": "ok", "sessions": {state: n}, ...}``;
        503 ``{"status": "error", "registry": "<what failed>"}`` when SQLite cannot be read.
        One indexed COUNT query; nothing is launched or proxied.
        """
        headers = {"Cache-Control": "no-store"}
        try:
            counts = self.registry.count_sessions(ACTIVE_STATES)
        except sqlite3.Error as exc:
            log.error("health check: the registry cannot be read: %s", exc)
            return web.json_response(
                {
                    "status": "error",
                    "version": __version__,
                    "registry": f"cannot be read ({exc}); check {self.registry.path} and the gateway's log",
                },
                status=503,
                headers=headers,
            )
        return web.json_response(
            {
                "status": "ok",
                "version": __version__,
                "registry": "ok",
                "sessions": counts,
                "active_sessions": sum(counts.values()),
                "open_websockets": self.sessions.open_websockets(),
            },
            headers=headers,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus metrics (text format); needs the admin token unless ``metrics_public``."""
        if not self.config.metrics_public and (denied := self._admin(request)):
            return denied
        return web.Response(
            body=self.sessions.metrics.render(),
            headers={"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": "no-store"},
        )

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI 3 document of this API."""
        return web.json_response(
            openapi_document(self.config.public_base, metrics_public=self.config.metrics_public)
        )

    async def list_visualizations(self, request: web.Request) -> web.Response:
        if denied := self._admin(request):
            return denied
        return web.json_response(
            {"visualizations": [self._describe(v) for v in self.registry.list_visualizations()]}
        )

    async def create(self, request: web.Request) -> web.Response:
        """Register a visualization; 201 ``{id, link, url, expires_at}``."""
        if denied := self._admin(request):
            return denied
        try:
            body = await self._json(request)
            unknown = set(body) - _CREATE_KEYS
            if unknown:
                raise InputError(
                    "request body",
                    f"unknown key(s) {', '.join(sorted(unknown))}",
                    f"use only {', '.join(sorted(_CREATE_KEYS))}",
                )
            data = body.get("data")
            if not isinstance(data, str) or not data.strip():
                raise InputError("data", "missing or empty", "give the path or URL of the (reduced) dataset")
            app = body.get("app")
            if app is not None and not isinstance(app, str):
                raise InputError("app", f"{app!r} is not an app name", "give e.g. explorer")
            app = app or "explorer"
            if not _APP_NAME.match(app):
                raise InputError("app", f"{app!r} is not an app name", "give e.g. explorer")
            title = body.get("title")
            if title is not None and not isinstance(title, str):
                raise InputError("title", "must be a string", "give a short title")
            title = title or os.path.basename(data.rstrip("/")) or data
            view = body.get("view")
            if view is not None and not isinstance(view, dict):
                raise InputError("view", "must be an object", 'give e.g. {"field": "pressure"}')
            warm = body.get("warm", False)
            if not isinstance(warm, bool):
                raise InputError("warm", "must be true or false", "give true to start the server now")
            ttl = self._ttl(body)
            launcher = normalize_launcher(body.get("launcher"), self.config.default_launcher)
        except InputError as exc:
            return _error(400, str(exc))
        viz = self.registry.add_visualization(data=data, app=app, title=title, launcher=launcher, view=view)
        if warm:
            self.sessions.ensure(viz)
        return web.json_response(self.link_payload(viz, ttl), status=201)

    async def get(self, request: web.Request) -> web.Response:
        if denied := self._admin(request):
            return denied
        viz = self._viz(request)
        if isinstance(viz, web.Response):
            return viz
        return web.json_response(self._describe(viz))

    async def delete(self, request: web.Request) -> web.Response:
        """Revoke: every link and cookie stops working at once; the server is stopped."""
        if denied := self._admin(request):
            return denied
        viz = self._viz(request)
        if isinstance(viz, web.Response):
            return viz
        self.registry.revoke(viz.id)
        session = self.sessions.current(viz.id)
        if session is not None and session.active:
            await self.sessions.stop_session(session.id, "the visualization was revoked")
        return web.json_response({"id": viz.id, "revoked": True})

    async def new_link(self, request: web.Request) -> web.Response:
        """A new link (e.g. after the old one expired); body ``{link_ttl_s}`` optional."""
        if denied := self._admin(request):
            return denied
        viz = self._viz(request)
        if isinstance(viz, web.Response):
            return viz
        if viz.revoked:
            return _error(409, f"visualization {viz.id} was revoked; register it again")
        try:
            body = await self._json(request)
            if unknown := set(body) - {"link_ttl_s"}:
                raise InputError(
                    "request body", f"unknown key(s) {', '.join(sorted(unknown))}", "send only link_ttl_s"
                )
            ttl = self._ttl(body)
        except InputError as exc:
            return _error(400, str(exc))
        return web.json_response(self.link_payload(viz, ttl), status=201)

    async def launch(self, request: web.Request) -> web.Response:
        """Warm start: launch the viz server now (returns the running one if there is one)."""
        if denied := self._admin(request):
            return denied
        viz = self._viz(request)
        if isinstance(viz, web.Response):
            return viz
        if viz.revoked:
            return _error(409, f"visualization {viz.id} was revoked; register it again")
        session = self.sessions.ensure(viz)
        return web.json_response(
            {"session": session.to_public(), "status": self.sessions.status(viz.id)}, status=202
        )

    async def get_session(self, request: web.Request) -> web.Response:
        if denied := self._admin(request):
            return denied
        session = self.registry.get_session(request.match_info["session_id"])
        if session is None:
            return _error(404, f"no session {request.match_info['session_id']!r}")
        return web.json_response(session.to_public())

    async def session_logs(self, request: web.Request) -> web.Response:
        """The last lines (``?lines=N``, at most 2000) of a session's job output, as text."""
        if denied := self._admin(request):
            return denied
        session_id = request.match_info["session_id"]
        if self.registry.get_session(session_id) is None:
            return _error(404, f"no session {session_id!r}")
        try:
            lines = log_lines(request.query.get("lines"))
        except ValueError:
            return _error(400, "lines must be a whole number, e.g. ?lines=200")
        text = await self.sessions.job_logs(session_id, lines)
        return web.Response(text=text, content_type="text/plain", headers={"Cache-Control": "no-store"})

    async def stop_session(self, request: web.Request) -> web.Response:
        """Stop a session's server now; its links stay valid and the next click starts a new one."""
        if denied := self._admin(request):
            return denied
        session_id = request.match_info["session_id"]
        if self.registry.get_session(session_id) is None:
            return _error(404, f"no session {session_id!r}")
        session = await self.sessions.stop_session(session_id, "stopped by an operator")
        return web.json_response(session.to_public())

    async def cull(self, request: web.Request) -> web.Response:
        """Check every session now (idle, too old, ended; jobs no session has are stopped);
        ``{"stopped": [sessions this pass ended]}``."""
        if denied := self._admin(request):
            return denied
        before = {s.id for s in self.registry.active_sessions()}
        await self.sessions.check_sessions(reap=True)
        ended = [self.registry.get_session(sid) for sid in sorted(before)]
        stopped = [s.to_public() for s in ended if s is not None and not s.active]
        return web.json_response({"checked": len(before), "stopped": stopped})

    async def ready(self, request: web.Request) -> web.Response:
        """A viz server job reports ``{host, port}``; authenticated by its session key."""
        key = bearer_token(request)
        if key is None:
            return _error(401, "missing session key: send 'Authorization: Bearer <HPCVIZ_SESSION_KEY>'")
        try:
            body = await self._json(request)
        except InputError as exc:
            return _error(400, str(exc))
        try:
            session = self.sessions.mark_ready(
                request.match_info["session_id"], key, body.get("host"), body.get("port")
            )
        except ReadyRejected as exc:
            return _error(exc.status, str(exc))
        return web.json_response({"ok": True, "session_id": session.id, "state": session.state})
