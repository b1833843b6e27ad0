"""Launch on click: one viz server session per visualization, from click to ready to stopped.

A session goes ``queued`` (job submitted) -> ``starting`` (job running, app
not yet listening) -> ``ready`` (the app reported host:port) and ends
``stopped`` (idle, revoked, restarted, server exited cleanly) or ``failed``
(with the reason and the job's log tail).

The server command is ``python -m prefect_hpcviz.viz.serve --app APP --data DATA
--report-url URL --idle-timeout S``, or the launcher's ``options.command``
template (see :func:`render_command`). The session key reaches the job only
through the environment (``HPCVIZ_SESSION_KEY``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from prefect_hpcviz.viz.backends import Backend, JobSpec, JobState, JobStatus, backend_class, get_backend
from prefect_hpcviz.viz.errors import HpcvizError, InputError
from prefect_hpcviz.viz.gateway import job_phase
from prefect_hpcviz.viz.gateway.config import GatewayConfig
from prefect_hpcviz.viz.gateway.metrics import GatewayMetrics
from prefect_hpcviz.viz.gateway.registry import (
    FAILED,
    QUEUED,
    READY,
    STARTING,
    STOPPED,
    Registry,
    Session,
    Visualization,
)

log = logging.getLogger(__name__)

SERVE_MODULE = "prefect_hpcviz.viz.serve"
GATEWAY_OPTIONS = ("command", "reverse")
"""Launcher options the gateway itself uses (not passed to the backend)."""
PLACEHOLDERS = ("python", "app", "data", "report_url", "idle_timeout", "session_id", "viz_id")
LOG_TAIL_LINES = 60


def log_lines(raw: str | None, default: int = 200, most: int = 2000) -> int:
    """How many log lines a ``?lines=N`` asks for, clamped to 1..``most``; ValueError if not a number.

    Example:
        >>> log_lines("5000"), log_lines(None), log_lines("0")
        (2000, 200, 1)
    """
    return min(max(int(raw if raw is not None else default), 1), most)

MESSAGES = {
    "none": "No viz server is running.",
    QUEUED: "Waiting for a node to run the viz server…",
    STARTING: "Starting the viz server…",
    READY: "Ready.",
    FAILED: "The viz server failed.",
    STOPPED: "The viz server stopped.",
}


class ReadyRejected(HpcvizError):
    """A ready report was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def render_command(template: list[str], values: dict[str, str]) -> list[str]:
    """Fill ``{placeholder}`` fields of a launcher command template.

    Placeholders: ``{python}`` (the gateway's interpreter), ``{app}``, ``{data}``,
    ``{report_url}``, ``{idle_timeout}`` (seconds), ``{session_id}``, ``{viz_id}``.
    Write ``{{`` / ``}}`` for literal braces. The session key is never a
    placeholder: it is in the job's environment as ``HPCVIZ_SESSION_KEY``.

    Example:
        >>> render_command(["{python}", "-m", "mysite.viz", "--data", "{data}"],
        ...                {"python": "/usr/bin/python3", "data": "/scratch/run1"})
        ['/usr/bin/python3', '-m', 'mysite.viz', '--data', '/scratch/run1']
    """
    out = []
    for part in template:
        try:
            out.append(part.format_map(values))
        except KeyError as exc:
            raise InputError(
                "launcher options.command",
                f"unknown placeholder {{{exc.args[0]}}} in {part!r}",
                f"use only {', '.join('{' + p + '}' for p in PLACEHOLDERS)}",
            ) from None
        except (ValueError, IndexError) as exc:
            raise InputError(
                "launcher options.command", f"bad template {part!r} ({exc})", "write {{ and }} for braces"
            ) from None
    return out


def default_command(values: dict[str, str]) -> list[str]:
    """The standard viz server command line for one session."""
    return [values["python"], "-m", SERVE_MODULE, *default_serve_args(values)]


def default_serve_args(values: dict[str, str]) -> list[str]:
    """The arguments of ``serve`` in :func:`default_command` (also what a standby server is given)."""
    return [
        "--app", values["app"],
        "--data", values["data"],
        "--report-url", values["report_url"],
        "--idle-timeout", values["idle_timeout"],
    ]  # fmt: skip


def normalize_launcher(launcher: Any, default: dict[str, Any]) -> dict[str, Any]:
    """Check a registration's launcher ``{"kind", "options"}``; InputError naming the problem.

    ``options`` are the backend's keyword arguments, plus the optional
    ``command`` template the gateway itself uses.

    Example:
        >>> normalize_launcher({"kind": "local", "options": {"command": ["{python}", "app.py"]}},
        ...                    {"kind": "local", "options": {}})["kind"]
        'local'
    """
    if launcher is None:
        launcher = default
    if not isinstance(launcher, dict):
        raise InputError("launcher", "must be an object", 'give {"kind": "local", "options": {}}')
    extra = set(launcher) - {"kind", "options"}
    if extra:
        raise InputError(
            "launcher", f"unknown key(s) {', '.join(sorted(extra))}", "use only kind and options"
        )
    kind = launcher.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise InputError("launcher.kind", "must be a string", "give e.g. local")
    kind = kind or "local"
    options = launcher.get("options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise InputError("launcher.options", "must be an object", "give the backend's settings as key: value")
    options = dict(options)
    reverse = options.pop("reverse", False)
    if not isinstance(reverse, bool):
        raise InputError(
            "launcher options.reverse",
            f"{reverse!r} is not true or false",
            "give true for nodes that accept no inbound connections (the server dials the gateway)",
        )
    command = options.pop("command", None)
    if command is not None:
        if not isinstance(command, list) or not command or not all(isinstance(p, str) for p in command):
            raise InputError(
                "launcher options.command",
                "must be a non-empty list of strings",
                'give e.g. ["{python}", "-m", "mysite.serve"]',
            )
        render_command(command, {p: p for p in PLACEHOLDERS})
    backend_class(kind)
    get_backend(kind, options)  # unknown or bad options fail now, not at the first click
    if command is not None:
        options["command"] = command
    if reverse:
        options["reverse"] = True
    return {"kind": kind, "options": options}


class SessionManager:
    """Starts, watches, culls and stops the viz server sessions of one gateway.

    Example:
        >>> # manager = SessionManager(config, registry); await manager.start()
        >>> # session = manager.ensure(registry.get_visualization(viz_id))
    """

    def __init__(self, config: GatewayConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.metrics = GatewayMetrics(registry.count_sessions, self.open_websockets)
        self.launched: set[str] = set()
        self._backends: dict[str, Backend] = {}
        self._current: dict[str, Session] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._activity: dict[str, float] = {}
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self._culler: asyncio.Task | None = None
        self._jobs: dict[str, JobStatus] = {}  # session id -> what its backend said last
        self._time_limits: dict[str, asyncio.Task] = {}  # ready sessions whose job has a time limit
        self._submitting = 0  # launches between backend.submit() and recording the job id
        self._stopping: set[str] = set()  # job ids whose backend.stop() is under way
        self._next_reap = 0.0  # time.monotonic() of the next reconciliation with the backends
        self.culling_passes = 0  # check_sessions() passes done
        self.reconciliations = 0  # reap_forgotten_jobs() passes that asked the backends
        self._host_re = re.compile(config.allowed_backend_hosts)
        self.on_session_end: list[Callable[[str], None]] = []  # called with the id of a session that ended
        self._dialed: dict[str, asyncio.Event] = {}  # reverse sessions whose server dialed this process

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the background task that culls idle sessions and notices ended jobs.

        Also starts the default launcher's standby viz server (if its backend
        keeps any), so that the first click finds one.
        """
        self._culler = asyncio.ensure_future(self._cull_forever())
        try:
            backend = self.backend_for(self.config.default_launcher)
        except HpcvizError as exc:
            log.warning("the default launcher is not usable: %s", exc)
            return
        if hasattr(backend, "warm_up") and not (self.config.default_launcher.get("options") or {}).get("command"):
            backend.warm_up("explorer")

    async def close(self, *, stop_launched: bool = False) -> None:
        """Stop background work and standby servers; with ``stop_launched`` also this instance's sessions."""
        if self._culler is not None:
            self._culler.cancel()
            await asyncio.gather(self._culler, return_exceptions=True)
        if stop_launched:
            await self.stop_all(self.launched, "the gateway stopped")
        tasks = [*self._tasks.values(), *self._time_limits.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closing = [backend.close() for backend in self._backends.values() if hasattr(backend, "close")]
        await asyncio.gather(*closing, return_exceptions=True)
        self._flush_activity()

    async def stop_all(self, session_ids: set[str], reason: str) -> None:
        """Stop these sessions (those still active) concurrently."""
        active = [sid for sid in session_ids if (s := self.registry.get_session(sid)) and s.active]
        await asyncio.gather(*(self.stop_session(sid, reason) for sid in active), return_exceptions=True)

    # ------------------------------------------------------------------ query
    def current(self, viz_id: str) -> Session | None:
        """The newest session of a visualization (any state), or None."""
        session = self._current.get(viz_id)
        if session is None:
            session = self.registry.latest_session(viz_id)
            if session is not None:
                self._current[viz_id] = session
        return session

    def status(self, viz_id: str) -> dict[str, Any]:
        """What the waiting page shows: state, phase, message, reason, log tail; when the session
        ends and, shortly before, a warning (the open app's page shows it, see end_notice.py)."""
        session = self.current(viz_id)
        state = session.state if session else "none"
        data: dict[str, Any] = {
            "state": state,
            "phase": state,
            "message": MESSAGES.get(state, state),
            "reason": session.reason if session else "",
            "session_id": session.id if session else None,
        }
        if state == FAILED:
            data["log_tail"] = session.log_tail
        if session is not None:  # the job's side: "queued (Resources)", "starting on vm", time left
            lifetime = self.config.max_lifetime_s
            lifetime_end = None if lifetime is None else session.created_at + lifetime
            job = self._jobs.get(session.id)
            data.update(job_phase.describe(state, job, now=time.time(), lifetime_ends_at=lifetime_end))
        return data

    async def wait_for_change(
        self, viz_id: str, since: str | None, timeout: float, phase: str | None = None
    ) -> dict[str, Any]:
        """The status as soon as its state differs from ``since`` or its phase from ``phase`` (or after ``timeout`` s)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            status = self.status(viz_id)
            remaining = deadline - time.monotonic()
            moved = status["state"] != since or (phase is not None and status["phase"] != phase)
            if since is None or moved or remaining <= 0:
                return status
            event = self._changed.setdefault(viz_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    # --------------------------------------------------------------- activity
    def touch(self, session_id: str) -> None:
        """Note proxied traffic for a session (cheap; flushed to SQLite by the culler)."""
        self._activity[session_id] = time.time()

    def open_websockets(self) -> int:
        """How many browser websockets are proxied now."""
        return sum(len(sockets) for sockets in self._sockets.values())

    def socket_opened(self, session_id: str, ws: web.WebSocketResponse) -> None:
        self._sockets.setdefault(session_id, set()).add(ws)

    def socket_closed(self, session_id: str, ws: web.WebSocketResponse) -> None:
        self._sockets.get(session_id, set()).discard(ws)

    async def close_sockets(self, reason: str) -> None:
        """Close every proxied browser websocket at shutdown: 1012 (service restart).

        The app's page reconnects after a 1012 (see reconnect.py), not after
        the 1001 of a session that was stopped.
        """
        for sockets in list(self._sockets.values()):
            for ws in list(sockets):
                await _quietly(ws.close(code=1012, message=reason.encode()[:123]))

    # ----------------------------------------------------------------- launch
    def ensure(self, viz: Visualization, user: str | None = None) -> Session:
        """The visualization's active session, or a new one being launched (for ``user``, under SSO)."""
        session = self.current(viz.id)
        if session is not None and session.active:
            return session
        return self.launch(viz, user)

    def launch(self, viz: Visualization, user: str | None = None) -> Session:
        """Create a session row (owned by ``user`` under SSO) and start launching its job in the background."""
        session = self.registry.add_session(viz.id, str(viz.launcher.get("kind", "local")), user=user)
        self._current[viz.id] = session
        self.launched.add(session.id)
        self._ready[session.id] = asyncio.Event()
        self._tasks[session.id] = asyncio.ensure_future(self._launch(viz, session))
        self._notify(viz.id)
        return session

    async def restart(self, viz: Visualization, user: str | None = None) -> Session:
        """Stop the current session (if any) and launch a new one."""
        session = self.current(viz.id)
        if session is not None and session.active:
            await self.stop_session(session.id, "restarted on request")
        return self.launch(viz, user)

    def job_spec(self, viz: Visualization, session: Session) -> JobSpec:
        """The JobSpec of a session: command from the launcher, key in env."""
        values = {
            "python": sys.executable,
            "app": viz.app,
            "data": viz.data,
            "report_url": f"{self.config.internal_base}/api/sessions/{session.id}/ready",
            "idle_timeout": str(max(1, round(self.config.idle_timeout_s))),
            "session_id": session.id,
            "viz_id": viz.id,
        }
        template = (viz.launcher.get("options") or {}).get("command")
        command = render_command(template, values) if template else default_command(values)
        # Only the standard command may go to a standby server: a site's own
        # command template must run as written.
        assignment = None if template else {"app": viz.app, "argv": default_serve_args(values)}
        reverse = bool((viz.launcher.get("options") or {}).get("reverse"))
        if reverse and not template:  # the node accepts no inbound connections: the server dials us
            command = [*command, "--reverse"]
            assignment["argv"] = [*assignment["argv"], "--reverse"]
        env = {
            "HPCVIZ_SESSION_KEY": session.secret,
            "HPCVIZ_SESSION_ID": session.id,
            "HPCVIZ_VIZ_ID": viz.id,
            "HPCVIZ_TITLE": viz.title,
        }
        if viz.view:
            env["HPCVIZ_VIEW"] = json.dumps(viz.view)
        if reverse:  # also for a site's own command (serve reads it as the default of --reverse)
            env["HPCVIZ_REVERSE"] = "1"
        return JobSpec(
            name=f"hpcviz-{viz.id}",
            command=command,
            env=env,
            workdir=self.config.state_dir / "jobs" / viz.id,
            assignment=assignment,
        )

    def backend_for(self, launcher: dict[str, Any]) -> Backend:
        """One backend instance per distinct launcher (kind + options)."""
        kind = str(launcher.get("kind", "local"))
        options = {k: v for k, v in (launcher.get("options") or {}).items() if k not in GATEWAY_OPTIONS}
        if kind == "local":
            options.setdefault("workdir", str(self.config.state_dir / "jobs"))
        if "gateway_id" in inspect.signature(backend_class(kind).__init__).parameters:
            options["gateway_id"] = self.registry.gateway_id  # its list_jobs (our reaper) sees only our jobs
        key = json.dumps([kind, options], sort_keys=True, default=str)
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backends[key] = get_backend(kind, options)
        return backend

    def _backend_of(self, session: Session) -> Backend | None:
        viz = self.registry.get_visualization(session.viz_id)
        if viz is None:
            return None
        try:
            return self.backend_for(viz.launcher)
        except HpcvizError:
            return None

    async def _launch(self, viz: Visualization, session: Session) -> None:
        failure = None
        self._submitting += 1  # the reaper leaves unknown jobs alone meanwhile
        try:
            backend = self.backend_for(viz.launcher)
            spec = self.job_spec(viz, session)
            job_id = await backend.submit(spec)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure ends as a readable reason
            failure = exc
        finally:
            self._submitting -= 1
        if failure is not None:
            log.warning("launch of session %s failed: %s", session.id, failure)
            self._tasks.pop(session.id, None)
            await self._fail(session.id, f"could not start the viz server: {failure}")
            return
        current = self.registry.get_session(session.id)
        if current is not None and current.active:
            self._update(session.id, job_id=job_id)
        else:  # stopped while we were submitting
            await self._stop_job(backend, job_id)
            return
        await self._watch_until_ready(session.id, backend, session.created_at + self.config.launch_timeout_s)

    async def _watch_until_ready(self, session_id: str, backend: Backend, deadline: float) -> None:
        """Phase 1: job queued -> running; phase 2: wait for the app's ready report.

        Time a job waits in a batch scheduler's queue does not count against
        the launch timeout (the page says why it waits). A backend that cannot
        answer right now (after its own retries) never ends the session: the
        next round asks again. Once ready, a job with a time limit is watched
        until shortly before it (:meth:`_stop_at_time_limit`).
        """
        delay = 0.05
        try:
            while True:
                session = self.registry.get_session(session_id)
                if session is None or session.state not in (QUEUED, STARTING):
                    if session is not None and session.state == READY:
                        self._watch_time_limit(session_id)
                    return
                last = self._jobs.get(session_id)
                if last is not None and last.state is JobState.QUEUED:
                    deadline = max(deadline, time.time() + self.config.launch_timeout_s)
                remaining = deadline - time.time()
                if remaining <= 0:
                    await self._fail(
                        session_id,
                        f"the viz server did not report ready within {self.config.launch_timeout_s:g} s",
                        outcome="timeout",
                    )
                    return
                job = await _quietly(backend.state(session.job_id)) if session.job_id else None
                if job is not None:
                    if job.state.ended:
                        if self.registry.get_session(session_id).state == READY:
                            return
                        why = job.reason or "exit code 0"
                        await self._fail(session_id, f"the viz server exited before it was ready ({why})")
                        return
                    self._jobs[session_id] = job
                    if last is None or (job.state, job.reason, job.node) != (last.state, last.reason, last.node):
                        self._notify(session.viz_id)  # a new phase for the waiting page
                    if job.state in (JobState.STARTING, JobState.RUNNING) and session.state == QUEUED:
                        self._update(session_id, state=STARTING)
                event = self._ready.setdefault(session_id, asyncio.Event())
                try:
                    await asyncio.wait_for(event.wait(), min(delay, remaining))
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 1.5, 1.0)
        finally:
            if self._tasks.get(session_id) is asyncio.current_task():
                self._tasks.pop(session_id, None)

    def _watch_time_limit(self, session_id: str) -> None:
        """A ready session whose job has a time limit: stop it cleanly just before the limit."""
        job = self._jobs.get(session_id)
        if job is not None and job.ends_at is not None and session_id not in self._time_limits:
            self._time_limits[session_id] = asyncio.ensure_future(self._stop_at_time_limit(session_id, job.ends_at))

    async def _stop_at_time_limit(self, session_id: str, ends_at: float) -> None:
        """Sleep until :data:`job_phase.STOP_BEFORE_S` before ``ends_at``, then stop the session.

        The status carries a warning before that (:func:`job_phase.describe`);
        the page then says why the view stopped and offers "Start again".
        """
        try:
            await asyncio.sleep(max(0.0, ends_at - job_phase.STOP_BEFORE_S - time.time()))
            session = self.registry.get_session(session_id)
            if session is not None and session.state == READY:
                await self.stop_session(session_id, job_phase.time_limit_reason(ends_at), ask_restart=True)
        finally:
            self._time_limits.pop(session_id, None)

    def mark_ready(self, session_id: str, key: str, host: Any, port: Any, *, via_tunnel: bool = False) -> Session:
        """Accept a job's ready report; ReadyRejected (with an HTTP status) otherwise.

        ``via_tunnel``: host:port is the gateway's own loopback end of a reverse
        connection (reverse_tunnel.py), not an address a job chose, so
        ``allowed_backend_hosts`` does not apply; a ready session takes the new
        address (its server dialed again after a gateway restart).
        """
        session = self.registry.get_session(session_id)
        if session is None:
            raise ReadyRejected(404, f"no session {session_id}")
        if not hmac.compare_digest(key.encode(), session.secret.encode()):
            raise ReadyRejected(403, "the session key does not match")
        if not via_tunnel and (not isinstance(host, str) or not self._host_re.fullmatch(host)):
            raise ReadyRejected(
                403,
                f"host {host!r} is not allowed for viz servers (allowed_backend_hosts = "
                f"{self.config.allowed_backend_hosts!r}); the gateway operator can widen the pattern",
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ReadyRejected(400, f"port {port!r} is not a TCP port number")
        if via_tunnel:
            self._dialed.setdefault(session_id, asyncio.Event()).set()
        if via_tunnel and session.state == READY:
            return self._update(session_id, host=host, port=port)
        if session.state not in (QUEUED, STARTING):
            raise ReadyRejected(409, f"the session is {session.state} ({session.reason}); start a new one")
        now = time.time()
        session = self._update(session_id, state=READY, host=host, port=port, ready_at=now, last_activity=now)
        self.metrics.launch_ended("ready", seconds=now - session.created_at)
        self._activity[session_id] = now
        self._ready.setdefault(session_id, asyncio.Event()).set()
        return session

    # ------------------------------------------------------------------- stop
    async def stop_session(
        self, session_id: str, reason: str, state: str = STOPPED, *, ask_restart: bool = False
    ) -> Session | None:
        """End a session: mark it (so nothing is proxied to it), close its sockets, stop its job.

        ``ask_restart``: the next page visit shows ``reason`` and a "Start again"
        button instead of launching a new server at once.
        """
        session = self.registry.get_session(session_id)
        if session is None or not session.active:
            return session
        if session.state in (QUEUED, STARTING):
            self.metrics.launch_ended("stopped")
        task = self._tasks.pop(session_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        session = self._update(session_id, state=state, reason=reason, ask_restart=ask_restart)
        for ws in list(self._sockets.pop(session_id, ())):
            await _quietly(ws.close(code=1001, message=b"the viz server was stopped"))
        backend = self._backend_of(session)
        if backend is not None and session.job_id:
            await self._stop_job(backend, session.job_id)
        return session

    async def dialed_back(self, viz: Visualization, session: Session) -> Session:
        """``session``, once its server has dialed this gateway process (reverse mode), or as it is.

        A gateway restarted while a reverse-mode server runs finds the session
        ready at the *old* process's loopback port until the server dials
        again (within about a second). A request arriving first waits for that,
        up to ``reverse_redial_s``, instead of ending the session.
        """
        event = self._dialed.get(session.id)
        if (event is not None and event.is_set()) or session.state != READY:
            return session  # every request of a session whose server dialed here: one lookup
        if not (viz.launcher.get("options") or {}).get("reverse"):
            return session
        event = self._dialed.setdefault(session.id, asyncio.Event())
        log.info("session %s: waiting up to %.0f s for its server to dial back", session.id,
                 self.config.reverse_redial_s)  # fmt: skip
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), self.config.reverse_redial_s)
        return self.registry.get_session(session.id) or session

    async def backend_lost(self, session_id: str, detail: str) -> Session | None:
        """The proxy could not reach a ready session: record why it stopped."""
        session = self.registry.get_session(session_id)
        if session is None or session.state != READY:
            return session
        backend = self._backend_of(session)
        job = None
        if backend is not None and session.job_id:
            job = await _quietly(backend.state(session.job_id))
        if job is not None and job.state.ended:
            state = STOPPED if job.state is JobState.DONE else FAILED
            reason = "the viz server ended" + (f" ({job.reason})" if job.reason else "")
        else:
            state = FAILED
            reason = f"the viz server stopped accepting connections ({detail})"
            if backend is not None and session.job_id:
                await self._stop_job(backend, session.job_id)
        return await self._end(session, state, reason, backend)

    async def job_logs(self, session_id: str, lines: int = 200) -> str:
        """The last ``lines`` of a session's job output ("" before it has any); the stored
        tail when the backend cannot be asked."""
        session = self.registry.get_session(session_id)
        if session is None:
            return ""
        backend = self._backend_of(session)
        if backend is None or not session.job_id:
            return session.log_tail
        text = await _quietly(backend.logs(session.job_id, lines))
        return session.log_tail if text is None else text

    async def _end(self, session: Session, state: str, reason: str, backend: Backend | None) -> Session:
        tail = ""
        if backend is not None and session.job_id:
            tail = await _quietly(backend.logs(session.job_id, LOG_TAIL_LINES)) or ""
        return self._update(session.id, state=state, reason=reason, log_tail=tail)

    async def _fail(self, session_id: str, reason: str, outcome: str = "failed") -> None:
        """A launch failed (before ready): stop its job, record why, count it."""
        session = self.registry.get_session(session_id)
        if session is None:
            return
        if session.active:
            self.metrics.launch_ended(outcome)
        backend = self._backend_of(session)
        if backend is not None and session.job_id:
            await self._stop_job(backend, session.job_id)
        await self._end(session, FAILED, reason, backend)

    # ------------------------------------------------------------------ cull
    async def _cull_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                await self.check_sessions()
            except Exception:
                log.exception("checking sessions failed")

    async def _stop_job(self, backend: Backend, job_id: str) -> None:
        """``backend.stop(job_id)``, with the job marked as being stopped meanwhile (the reaper leaves it alone)."""
        self._stopping.add(job_id)
        try:
            await _quietly(backend.stop(job_id))
        finally:
            self._stopping.discard(job_id)

    async def check_sessions(self, *, reap: bool | None = None) -> None:
        """One pass: stop idle and too old sessions, record ended jobs, adopt launches of an
        earlier gateway; then stop jobs no active session has (:meth:`reap_forgotten_jobs`)
        when ``reap`` is True, or, by default, when ``reap_interval_s`` has passed since the
        last reconciliation (listing jobs is an ``squeue`` for Slurm: too dear for every pass)."""
        self._flush_activity()
        now = time.time()
        max_lifetime = self.config.max_lifetime_s
        for session in self.registry.active_sessions():
            if max_lifetime is not None and now - session.created_at > max_lifetime:
                await self.stop_session(
                    session.id,
                    f"stopped after {_duration(max_lifetime)}, the gateway's maximum session lifetime; "
                    "start again",
                    ask_restart=True,
                )
                continue
            if session.state == READY:
                last = session.last_activity or session.ready_at or session.created_at
                if now - last > self.config.idle_timeout_s:
                    await self.stop_session(
                        session.id, f"stopped after {_duration(self.config.idle_timeout_s)} without activity"
                    )
                    continue
                backend = self._backend_of(session)
                if backend is None or not session.job_id:
                    continue
                job = await _quietly(backend.state(session.job_id))
                if job is not None and job.state.ended:
                    state = STOPPED if job.state is JobState.DONE else FAILED
                    reason = "the viz server ended" + (f" ({job.reason})" if job.reason else "")
                    await self._end(session, state, reason, backend)
            elif session.id not in self._tasks:
                self._adopt(session)
        if reap or (reap is None and time.monotonic() >= self._next_reap):
            self._next_reap = time.monotonic() + self.config.reap_interval_s
            await self.reap_forgotten_jobs()
        self.culling_passes += 1

    async def reap_forgotten_jobs(self) -> list[str]:
        """Stop jobs that the backends still run but no active session has; return their ids.

        A job is forgotten when its session ended while the job went on (its
        stop failed, the gateway died in between) or the registry lost its row.
        Only backends with the optional ``list_jobs()`` are asked. Nothing is
        reaped while a launch is between submitting its job and recording its
        id, so a job is never stopped for being a moment too new, nor a job that
        is being stopped (its session already ended, its stop still under way),
        nor one whose session was active when the listing began.
        """
        listers = {id(b): b for b in self._backends.values() if hasattr(b, "list_jobs")}
        if not listers or self._submitting:
            return []
        self.reconciliations += 1
        known = self._wanted_jobs()
        listed: dict[str, Backend] = {}
        for backend in listers.values():
            jobs = await _quietly(backend.list_jobs())
            for job_id in jobs or {}:
                listed.setdefault(job_id, backend)
        if self._submitting:
            return []
        known |= self._wanted_jobs()
        forgotten = []
        for job_id in listed:
            if job_id in known or job_id in self._stopping:  # (a stop may have begun meanwhile)
                continue
            log.warning("stopping viz server job %s: no active session has it (%r)", job_id, listed[job_id])
            forgotten.append(job_id)
            await self._stop_job(listed[job_id], job_id)
        return forgotten

    def _wanted_jobs(self) -> set[str]:
        """Job ids the reaper must leave alone now: those of active sessions and those being stopped."""
        return {s.job_id for s in self.registry.active_sessions() if s.job_id} | self._stopping

    def _adopt(self, session: Session) -> None:
        backend = self._backend_of(session)
        if backend is None:
            return
        self._ready.setdefault(session.id, asyncio.Event())
        deadline = session.created_at + self.config.launch_timeout_s
        self._tasks[session.id] = asyncio.ensure_future(
            self._watch_until_ready(session.id, backend, deadline)
        )

    def _flush_activity(self) -> None:
        activity, self._activity = self._activity, {}
        try:
            self.registry.record_activity(activity)
        except Exception:
            self._activity.update(activity)
            raise

    # ---------------------------------------------------------------- notify
    def _update(self, session_id: str, **fields: Any) -> Session:
        session = self.registry.update_session(session_id, **fields)
        assert session is not None
        current = self._current.get(session.viz_id)
        if current is None or current.id == session.id or session.created_at >= current.created_at:
            self._current[session.viz_id] = session
        if fields.get("state") in (FAILED, STOPPED):  # ended: forget what only a live session needs
            for hook in self.on_session_end:
                hook(session_id)
            self._ready.pop(session_id, None)
            self._dialed.pop(session_id, None)
            self._jobs.pop(session_id, None)
            limit = self._time_limits.get(session_id)
            if limit is not None and limit is not asyncio.current_task():  # the task ends itself
                self._time_limits.pop(session_id).cancel()
            self.launched.discard(session_id)
            if not self._sockets.get(session_id):
                self._sockets.pop(session_id, None)
        if "state" in fields:
            self._notify(session.viz_id)
        return session

    def _notify(self, viz_id: str) -> None:
        event = self._changed.pop(viz_id, None)
        if event is not None:
            event.set()


async def _quietly(awaitable):
    """Await; log and swallow errors (used where a failure must not hide the real one)."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("%s", exc)
        return None


def _duration(seconds: float) -> str:
    """Seconds as people say them: ``_duration(28800) == "8 h"``, ``_duration(900) == "15 min"``."""
    if seconds >= 7200:
        return f"{seconds / 3600:g} h"
    if seconds >= 120:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
