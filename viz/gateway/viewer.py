"""What the browser sees: the link exchange, the waiting page and the proxied app.

``/v/<id>?token=T``  checks the link, trades it for a cookie scoped to
                     ``/s/<id>/`` and redirects there (the token leaves the address bar).
``/s/<id>/...``      with that cookie: the app, proxied to its viz server; a
                     waiting page while it starts; a page saying what happened
                     (with "start again") when it failed or stopped.
``/s/<id>/__hpcviz__/status``   JSON status, long-polled by the waiting page.
``/s/<id>/__hpcviz__/restart``  POST: stop the current server and start a new one.
``/s/<id>/__hpcviz__/logs``     the viz server job's output (``?lines=N``), as text.
``/s/<id>/__hpcviz__/reconnect.js``  reloads the app's page after a gateway restart (reconnect.py).
``/s/<id>/__hpcviz__/end-notice.js``  says on the app's page when its session ends, and why it ended (end_notice.py).

Websocket upgrades must come from the gateway's own origin (origin.py).
Under single sign-on every request needs the user a trusted proxy names
(trust.py), and a running session answers only the user who started it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from prefect_hpcviz.viz.gateway import pages
from prefect_hpcviz.viz.gateway.config import GatewayConfig
from prefect_hpcviz.viz.gateway import end_notice, reconnect
from prefect_hpcviz.viz.gateway.launch import SessionManager, log_lines
from prefect_hpcviz.viz.gateway.origin import OriginPolicy
from prefect_hpcviz.viz.gateway.proxy import BackendUnavailable, ReverseProxy, build_target
from prefect_hpcviz.viz.gateway.registry import FAILED, READY, STOPPED, Registry, Session, Visualization
from prefect_hpcviz.viz.gateway.tokens import COOKIE, LINK, Signer, TokenError
from prefect_hpcviz.viz.gateway.trust import Refused, Trust, parse_networks
from prefect_hpcviz.viz.gateway.wslink_auth import HelloSecretInjector

COOKIE_NAME = "hpcviz_auth"
CONTROL = "__hpcviz__"
USER = web.RequestKey("hpcviz_user", str)  # the signed-in user under single sign-on
# Request headers the gateway sets itself (see _forward_headers): the client's own never pass.
REPLACED_HEADERS = ("Cookie", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix")
NEW_LINK_HINT = "Ask the person who shared it for a new link, or re-run the flow that published it."
_new_link_hint = "ask the person who shared it for a new link, or re-run the flow that published it."


def cookie_values(request: web.Request, name: str) -> list[str]:
    """Every value the request's Cookie headers carry for ``name`` (browsers may send several)."""
    values = []
    for header in request.headers.getall("Cookie", []):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                values.append(value.strip().strip('"'))
    return values


def strip_cookie(request: web.Request, name: str) -> str:
    """The Cookie header without ``name`` (the backend never sees the gateway's cookie)."""
    kept = []
    for header in request.headers.getall("Cookie", []):
        for part in header.split(";"):
            if part.strip() and part.strip().partition("=")[0] != name:
                kept.append(part.strip())
    return "; ".join(kept)


def wants_html(request: web.Request) -> bool:
    """True for a browser navigation (the page itself), not for XHR, assets or websockets."""
    if request.method not in ("GET", "HEAD") or request.headers.get("Upgrade", "").lower() == "websocket":
        return False
    dest = request.headers.get("Sec-Fetch-Dest")
    if dest:
        return dest in ("document", "iframe")
    return "text/html" in request.headers.get("Accept", "")


def split_raw_path(request: web.Request) -> tuple[str, str]:
    """(path after ``/s/<id>``, query), both still percent-encoded as the client sent them."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    if not raw_path.startswith("/"):  # absolute form, "GET http://host/s/<id>/... HTTP/1.1": the path part
        raw_path = "/" + (raw_path.split("/", 3)[3:] or [""])[0]
    rest = raw_path.split("/", 3)  # "", "s", "<id>", "tail"
    return "/" + (rest[3] if len(rest) > 3 else ""), raw_query


class ViewerRoutes:
    """Handlers for ``/v/`` and ``/s/``; see the module docstring."""

    def __init__(
        self,
        config: GatewayConfig,
        registry: Registry,
        signer: Signer,
        sessions: SessionManager,
        proxy: ReverseProxy,
    ) -> None:
        self.config = config
        self.registry = registry
        self.signer = signer
        self.sessions = sessions
        self.proxy = proxy
        self.trust = Trust(parse_networks(config.trusted_proxies), config.user_header)
        self.origins = OriginPolicy(
            config.public_base, config.allowed_origins, loopback_aliases=config.public_url is None
        )

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v/{viz_id}", self.open_link)
        router.add_route("*", "/s/{viz_id}", self.add_slash)
        # One route for all of /s/<id>/: the gateway's own pages under CONTROL/ are answered
        # here and never proxied (an unknown one is a 404, a wrong method a 405).
        router.add_route("*", "/s/{viz_id}/{tail:.*}", self.under_app)
        self._own_pages = {
            "status": ("GET", self.status),
            "restart": ("POST", self.restart),
            "logs": ("GET", self.logs),
            reconnect.SCRIPT_NAME: ("GET", self.reconnect_script),
            end_notice.SCRIPT_NAME: ("GET", self.end_notice_script),
        }

    async def under_app(self, request: web.Request) -> web.StreamResponse:
        """``/s/<id>/<tail>``: the gateway's own page for ``CONTROL/<name>``, the app otherwise."""
        tail = request.match_info["tail"]
        if not tail.startswith(CONTROL + "/"):
            return await self.app(request)
        name = tail[len(CONTROL) + 1 :]
        if name not in self._own_pages:
            raise web.HTTPNotFound()
        method, handler = self._own_pages[name]
        allowed = {method, "HEAD"} if method == "GET" else {method}
        if request.method not in allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        return await handler(request)

    def app_path(self, viz_id: str) -> str:
        return f"{self.config.public_path}/s/{viz_id}/"

    # ------------------------------------------------------------------ auth
    def _deny(self, request: web.Request, status: int, heading: str, message: str) -> web.Response:
        if wants_html(request):
            return pages.problem_page(status, heading, message)
        return web.json_response(
            {"error": f"{heading}. {message}"}, status=status, headers={"Cache-Control": "no-store"}
        )

    def _authorize(self, request: web.Request) -> Visualization | web.Response:
        if self.trust.sso and (denied := self._sign_in(request)):
            return denied
        viz_id = request.match_info["viz_id"]
        viz = self.registry.get_visualization(viz_id)
        if viz is None:
            return self._deny(
                request, 404, "No such visualization", "Check the address, or " + _new_link_hint
            )
        if viz.revoked:
            return self._deny(request, 403, "This visualization was withdrawn", NEW_LINK_HINT)
        values = cookie_values(request, COOKIE_NAME)
        if not values:
            return self._deny(
                request,
                403,
                "Open the link you were given",
                "This address works only after your browser has opened the shared link "
                "(the one ending in ?token=…). Open that link again; if it no longer works, "
                + _new_link_hint,
            )
        for value in values:
            try:
                self.signer.verify(value, viz_id, kind=COOKIE)
            except TokenError:
                continue
            if self.trust.sso and (denied := self._not_theirs(request, viz)):
                return denied
            return viz
        return self._deny(
            request, 403, "Your access has expired", "Open the shared link again. " + NEW_LINK_HINT
        )

    def _sign_in(self, request: web.Request) -> web.Response | None:
        """Single sign-on: note the user a trusted proxy names; refuse a claim from anywhere else."""
        try:
            request[USER] = self.trust.user(request)
        except Refused as exc:
            heading = "Sign in first" if exc.status == 401 else "Not accepted from your address"
            return self._deny(request, exc.status, heading, f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
        return None

    def _not_theirs(self, request: web.Request, viz: Visualization) -> web.Response | None:
        """403 when the visualization's running session belongs to another signed-in user."""
        session = self.sessions.current(viz.id)
        if session is None or not session.active or session.user in (None, request[USER]):
            return None
        return self._deny(
            request,
            403,
            "This 3D view is in use by another user",
            "Its viz server was started by someone else and only they can reach it. "
            "Try again when they have finished (idle sessions are stopped), or ask for your own copy.",
        )

    # ------------------------------------------------------------------ /v/
    async def open_link(self, request: web.Request) -> web.Response:
        """Trade a link token for a cookie and redirect to the app without the token."""
        viz_id = request.match_info["viz_id"]
        viz = self.registry.get_visualization(viz_id)
        if viz is None:
            return pages.problem_page(
                404,
                "No such visualization",
                "This link points to a visualization the gateway does not know. " + NEW_LINK_HINT,
            )
        if viz.revoked:
            return pages.problem_page(
                403, "This visualization was withdrawn", "Its links no longer work. " + NEW_LINK_HINT
            )
        try:
            claims = self.signer.verify(request.query.get("token", ""), viz_id, kind=LINK)
        except TokenError as exc:
            return pages.problem_page(
                403, "This link cannot be used", f"{exc.reason[:1].upper()}{exc.reason[1:]}. {NEW_LINK_HINT}"
            )
        if self.trust.sso and (denied := self._sign_in(request) or self._not_theirs(request, viz)):
            return denied
        ttl = int(min(self.config.cookie_ttl_s, claims.expires_at - time.time()))
        cookie = self.signer.sign(viz_id, kind=COOKIE, ttl_s=ttl)
        response = web.Response(
            status=303,
            headers={
                "Location": self.app_path(viz_id),
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            path=self.app_path(viz_id),
            max_age=ttl,
            httponly=True,
            samesite="Lax",
            secure=self.trust.https(request, self.config.secure_cookies),
        )
        return response

    # ------------------------------------------------------------------ /s/
    async def add_slash(self, request: web.Request) -> web.Response:
        """``/s/<id>`` -> ``/s/<id>/`` (trame needs the slash), query kept as sent."""
        query = request.rel_url.raw_query_string
        location = self.app_path(request.match_info["viz_id"]) + (f"?{query}" if query else "")
        return web.Response(status=301, headers={"Location": location})

    async def status(self, request: web.Request) -> web.Response:
        """JSON status; ``?wait=S&since=STATE`` answers as soon as the state differs."""
        viz = self._authorize(request)
        if isinstance(viz, web.Response):
            return viz
        try:
            wait = min(max(float(request.query.get("wait", "0")), 0.0), 30.0)
        except ValueError:
            wait = 0.0
        status = await self.sessions.wait_for_change(
            viz.id, request.query.get("since"), wait, phase=request.query.get("phase")
        )
        return web.json_response(status, headers={"Cache-Control": "no-store"})

    async def logs(self, request: web.Request) -> web.Response:
        """The last lines (``?lines=N``, at most 2000) of the current viz server job's output, as text."""
        viz = self._authorize(request)
        if isinstance(viz, web.Response):
            return viz
        try:
            lines = log_lines(request.query.get("lines"))
        except ValueError:
            lines = 200
        session = self.sessions.current(viz.id)
        text = await self.sessions.job_logs(session.id, lines) if session is not None else ""
        return web.Response(
            text=text, content_type="text/plain", headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        )

    async def reconnect_script(self, request: web.Request) -> web.Response:
        """The script the app's page loads to come back after its websocket dropped."""
        viz = self._authorize(request)
        if isinstance(viz, web.Response):
            return viz
        return reconnect.script_response()

    async def end_notice_script(self, request: web.Request) -> web.Response:
        """The script the app's page loads to say when its session ends, and why it ended."""
        viz = self._authorize(request)
        if isinstance(viz, web.Response):
            return viz
        return end_notice.script_response()

    async def restart(self, request: web.Request) -> web.Response:
        """Stop the current viz server and start a new one."""
        viz = self._authorize(request)
        if isinstance(viz, web.Response):
            return viz
        await self.sessions.restart(viz, request.get(USER))
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response(self.sessions.status(viz.id), status=202)
        return web.Response(
            status=303, headers={"Location": self.app_path(viz.id), "Cache-Control": "no-store"}
        )

    async def app(self, request: web.Request) -> web.StreamResponse:
        """The app itself when ready; otherwise start it and show the waiting page."""
        viz = self._authorize(request)
        if isinstance(viz, web.Response):
            return viz
        tail, query = split_raw_path(request)
        session = self.sessions.current(viz.id)
        if session is not None and session.state == READY:
            session = await self.sessions.dialed_back(viz, session)  # reverse mode, right after a restart
            try:
                return await self._proxy(request, viz, session, tail, query)
            except BackendUnavailable as exc:
                session = await self.sessions.backend_lost(session.id, str(exc)) or session
                return self._ended_response(request, viz, session, tail)
        if wants_html(request):
            if session is not None and (
                session.state == FAILED or (session.state == STOPPED and session.ask_restart)
            ):  # say what happened; "Start again" launches a new one
                return self._ended_response(request, viz, session, tail)
            self.sessions.ensure(viz, request.get(USER))
            status = await self._settle(viz.id, self.config.hold_first_page_s)
            session = self.sessions.current(viz.id)
            if session is not None and session.state == READY:
                return await self.app(request)  # a fast start: the app itself, no waiting page
            return pages.waiting_page(viz.title, status, status_url=_relative(tail, f"{CONTROL}/status"))
        status = self.sessions.status(viz.id)
        if status["state"] in ("queued", "starting"):
            error = f"the viz server is not ready yet ({status['message']})"
        else:
            why = f" ({status['reason']})" if status["reason"] else ""
            error = f"the viz server is not running{why}; reload the page to start it again"
        return web.json_response(
            {"error": error, **status},
            status=503,
            headers={"Retry-After": "2", "Cache-Control": "no-store"},
        )

    async def _settle(self, viz_id: str, timeout: float) -> dict:
        """The session's status once it left queued/starting, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        status = self.sessions.status(viz_id)
        while status["state"] in ("queued", "starting") and (left := deadline - time.monotonic()) > 0:
            status = await self.sessions.wait_for_change(viz_id, status["state"], left)
        return status

    async def _proxy(
        self, request: web.Request, viz: Visualization, session: Session, tail: str, query: str
    ) -> web.StreamResponse:
        target = build_target(session.host, session.port, tail, query)
        sid = session.id
        headers = self._forward_headers(request, viz.id)
        touch = lambda: self.sessions.touch(sid)  # noqa: E731
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not self.origins.allows(origin := request.headers.get("Origin")):
                return self._foreign_origin(origin)  # before any backend connection (see origin.py)
            return await self.proxy.websocket(
                request,
                target,
                extra_headers=headers,
                drop_request_headers=REPLACED_HEADERS,
                transform=HelloSecretInjector(session.secret),
                on_activity=touch,
                on_open=lambda ws: self.sessions.socket_opened(sid, ws),
                on_close=lambda ws: self.sessions.socket_closed(sid, ws),
            )
        if tail in ("/", "/index.html") and request.method == "GET" and wants_html(request):
            touch()  # the app's page: the reconnect and end notice scripts go in
            scripts = [f"{CONTROL}/{reconnect.SCRIPT_NAME}", f"{CONTROL}/{end_notice.SCRIPT_NAME}"]
            return await reconnect.fetch_page(request, target, headers, scripts, COOKIE_NAME)
        return await self.proxy.http(
            request,
            target,
            extra_headers=headers,
            drop_request_headers=REPLACED_HEADERS,
            drop_set_cookie=lambda value: value.split("=", 1)[0].strip() == COOKIE_NAME,
            on_activity=touch,
        )

    def _foreign_origin(self, origin: str | None) -> web.Response:
        message = (
            f"websocket from origin {origin!r} refused: only pages of {self.config.public_base} "
            "(and the gateway's allowed_origins) may connect"
        )
        return web.json_response({"error": message}, status=403, headers={"Cache-Control": "no-store"})

    def _forward_headers(self, request: web.Request, viz_id: str) -> dict[str, Any]:
        headers = {}
        cookies = strip_cookie(request, COOKIE_NAME)
        if cookies:
            headers["Cookie"] = cookies
        remote = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
        headers["X-Forwarded-Proto"] = "https" if self.trust.https(request, self.config.secure_cookies) else "http"
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Prefix"] = self.app_path(viz_id).rstrip("/")
        return headers

    def _ended_response(
        self, request: web.Request, viz: Visualization, session: Session, tail: str
    ) -> web.Response:
        if not wants_html(request):
            status = self.sessions.status(viz.id)
            return web.json_response(
                {"error": f"the viz server is not running ({session.reason or session.state})", **status},
                status=503,
                headers={"Cache-Control": "no-store"},
            )
        if session.state == FAILED and session.ready_at is None:
            heading, message = "The 3D view could not start", "Its viz server failed while starting."
        elif session.state == FAILED:
            heading, message = "The 3D view stopped", "Its viz server stopped unexpectedly."
        else:
            heading, message = "The 3D view stopped", "Its viz server is no longer running."
        return pages.problem_page(
            503,
            heading,
            message + " Start it again to continue (the view starts from the beginning).",
            reason=session.reason,
            log_tail=session.log_tail,
            restart_url=_relative(tail, f"{CONTROL}/restart"),
        )


def _relative(tail: str, target: str) -> str:
    """A URL for ``/s/<id>/<target>`` relative to the page at ``/s/<id><tail>``."""
    depth = tail.count("/") - 1
    return "../" * depth + target if depth > 0 else target
