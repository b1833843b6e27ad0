"""A small synchronous client for the gateway's REST API (what tasks and blocks use).

Example::

    from prefect_hpcviz.viz.gateway import GatewayClient

    gw = GatewayClient("https://viz.example.org", admin_token)
    reg = gw.register("/scratch/run42/reduced", app="explorer", title="run 42")
    print(reg.link)               # share this: it opens the 3D view
    gw.revoke(reg.id)             # the link stops working at once
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import httpx

from prefect_hpcviz.viz.errors import HpcvizError, InputError, LaunchError


class GatewayError(HpcvizError):
    """The gateway refused a request or could not be reached; the message says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Registration:
    """A registered visualization: ``link`` is what you share."""

    id: str
    link: str
    url: str
    expires_at: dt.datetime


class GatewayClient:
    """Talks to one gateway with its admin token.

    Args:
        url: the gateway's base URL (public or internal).
        admin_token: bearer token of the REST API.
        timeout: seconds per HTTP request.

    Example:
        >>> client = GatewayClient("http://127.0.0.1:8765", "token")
        >>> client.url
        'http://127.0.0.1:8765'
    """

    def __init__(self, url: str, admin_token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise GatewayError(
                f"{self.url}: cannot reach the gateway ({exc}). Check that it runs and the URL is right."
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            message = message or f"HTTP {response.status_code}"
            if response.status_code == 400:
                raise InputError(f"{method} {path}", message.rstrip("."), "fix the request")
            raise GatewayError(f"{method} {self.url}{path}: {message}", status=response.status_code)
        return body

    # ------------------------------------------------------------------ calls
    def health(self) -> dict[str, Any]:
        """``{"status": "ok", ...}`` when the gateway is up."""
        return self._call("GET", "/healthz")

    def register(
        self,
        data: str,
        app: str = "explorer",
        title: str | None = None,
        launcher: dict[str, Any] | None = None,
        warm: bool = False,
        link_ttl_s: float | None = None,
        view: dict[str, Any] | None = None,
    ) -> Registration:
        """Register a dataset + app; returns the shareable link.

        Args:
            data: path or URL of the (reduced) dataset, as the viz server will see it.
            app: viz app name (``explorer``).
            title: shown on the waiting page; default the data's base name.
            launcher: ``{"kind": "local", "options": {...}}``; ``options.command``
                is a command template (see ``launch.render_command``).
            warm: start the viz server now instead of on the first click.
            link_ttl_s: lifetime of the link (default: the gateway's, 7 days).
            view: initial view settings handed to the app (``HPCVIZ_VIEW``).

        Example:
            >>> # reg = client.register("/scratch/run1/reduced", title="run 1")
            >>> # reg.link -> 'https://viz.example.org/v/AbC...?token=...'
        """
        body: dict[str, Any] = {"data": str(data), "app": app, "warm": warm}
        if title is not None:
            body["title"] = title
        if launcher is not None:
            body["launcher"] = launcher
        if link_ttl_s is not None:
            body["link_ttl_s"] = link_ttl_s
        if view is not None:
            body["view"] = view
        return _registration(self._call("POST", "/api/visualizations", body))

    def get(self, viz_id: str) -> dict[str, Any]:
        """Everything about a visualization, with its current session and status."""
        return self._call("GET", f"/api/visualizations/{viz_id}")

    def list(self) -> list[dict[str, Any]]:
        """All visualizations, newest first."""
        return self._call("GET", "/api/visualizations")["visualizations"]

    def new_link(self, viz_id: str, link_ttl_s: float | None = None) -> Registration:
        """A fresh link for an existing visualization."""
        body = {"link_ttl_s": link_ttl_s} if link_ttl_s is not None else {}
        return _registration(self._call("POST", f"/api/visualizations/{viz_id}/links", body))

    def revoke(self, viz_id: str) -> None:
        """Kill every link of a visualization now and stop its viz server."""
        self._call("DELETE", f"/api/visualizations/{viz_id}")

    def launch(self, viz_id: str) -> dict[str, Any]:
        """Start the viz server now (no-op when one is running); returns the session."""
        return self._call("POST", f"/api/visualizations/{viz_id}/launch")["session"]

    def cull(self) -> list[dict[str, Any]]:
        """Stop idle and too old sessions now; the sessions this stopped (id, viz_id, reason, ...).

        Example:
            >>> # [s["reason"] for s in client.cull()] -> ['stopped after 15 min without activity']
        """
        return self._call("POST", "/api/cull")["stopped"]

    def wait_ready(self, viz_id: str, timeout: float = 120.0, *, launch: bool = True) -> dict[str, Any]:
        """Block until the visualization's viz server is ready; return its session.

        Raises:
            LaunchError: the launch failed (with the reason and the log tail) or
                took longer than ``timeout`` seconds.
        """
        if launch:
            self.launch(viz_id)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            info = self.get(viz_id)
            session = info.get("session") or {}
            state = session.get("state")
            if state == "ready":
                return session
            if state in ("failed", "stopped"):
                tail = session.get("log_tail", "").strip()
                raise LaunchError(
                    f"visualization {viz_id}: the viz server {state}: {session.get('reason') or 'no reason given'}"
                    + (f"\nlast log lines:\n{tail}" if tail else "")
                )
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"visualization {viz_id}: the viz server was not ready after {timeout:g} s (state {state}). "
                    "Wait longer, or look at the gateway's session for its log."
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 1.0)


def _registration(body: dict[str, Any]) -> Registration:
    expires = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    return Registration(id=body["id"], link=body["link"], url=body["url"], expires_at=expires)
