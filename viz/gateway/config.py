"""Gateway settings: where it listens, what it calls itself, limits and trust.

Everything has a safe default for a laptop; a site changes ``public_url``,
``internal_url`` (how compute nodes reach the gateway), ``allowed_backend_hosts``
(which nodes may serve) and the default launcher.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.paths import hpcviz_home

LOOPBACK_HOSTS = r"^(127(\.\d{1,3}){3}|::1|localhost)$"


@dataclass
class GatewayConfig:
    """How one gateway runs.

    Args:
        host: interface to listen on.
        port: port to listen on (0: any free port; EmbeddedGateway does this).
        public_url: base URL users reach the gateway at (links are built from it);
            default ``http://<host>:<port>``. ``https://`` makes cookies Secure.
        internal_url: base URL viz server jobs report readiness to; default
            ``http://127.0.0.1:<port>`` (set it to an address compute nodes can reach).
        state_dir: SQLite registry, signing key, admin token and job logs.
        admin_token: bearer token of the REST API; default: generated once into
            ``state_dir/admin_token`` (0600) and reused.
        link_ttl_s: default lifetime of a shared link (7 days).
        cookie_ttl_s: lifetime of the browser cookie a link is exchanged for.
        idle_timeout_s: a session with no proxied traffic for this long is stopped.
        launch_timeout_s: a session not ready this long after launch has failed.
        hold_first_page_s: how long the page request that starts a server waits
            for it before answering with the waiting page; a server that is ready
            by then (a standby) is shown at once, saving the waiting page's reload.
        allowed_backend_hosts: regex a ready report's host must match (SSRF guard).
        default_launcher: ``{"kind", "options"}`` used when a registration gives none.
        poll_interval_s: how often jobs are checked and idle sessions culled.
        max_ws_message: largest websocket message proxied, either direction.

    Example:
        >>> GatewayConfig(port=8765, state_dir="/tmp/gw").public_base
        'http://127.0.0.1:8765'
    """

    host: str = "127.0.0.1"
    port: int = 8765
    public_url: str | None = None
    internal_url: str | None = None
    state_dir: Path = field(default_factory=lambda: hpcviz_home() / "gateway")
    admin_token: str | None = None
    link_ttl_s: int = 7 * 24 * 3600
    cookie_ttl_s: int = 12 * 3600
    idle_timeout_s: float = 900.0
    launch_timeout_s: float = 120.0
    hold_first_page_s: float = 1.5
    allowed_backend_hosts: str = LOOPBACK_HOSTS
    default_launcher: dict[str, Any] = field(default_factory=lambda: {"kind": "local", "options": {}})
    poll_interval_s: float = 5.0
    max_ws_message: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).expanduser()
        for name in ("public_url", "internal_url"):
            value = getattr(self, name)
            if value is not None:
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise InputError(
                        name, f"{value!r} is not an http(s) URL", "give e.g. https://viz.example.org"
                    )
                setattr(self, name, value.rstrip("/"))
        try:
            re.compile(self.allowed_backend_hosts)
        except re.error as exc:
            raise InputError(
                "allowed_backend_hosts", f"not a regular expression ({exc})", "fix the pattern"
            ) from exc
        for name in ("link_ttl_s", "cookie_ttl_s", "idle_timeout_s", "launch_timeout_s", "poll_interval_s"):
            if getattr(self, name) <= 0:
                raise InputError(name, "must be positive", f"give a number of seconds > 0 for {name}")

    @property
    def public_base(self) -> str:
        """Base URL of links, without a trailing slash."""
        return self.public_url or f"http://{url_host(self.host)}:{self.port}"

    @property
    def internal_base(self) -> str:
        """Base URL viz server jobs report to, without a trailing slash."""
        return self.internal_url or f"http://127.0.0.1:{self.port}"

    @property
    def public_path(self) -> str:
        """Path prefix of public_url ("" at the root), for cookie paths."""
        return urlsplit(self.public_base).path.rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        """Cookies get the Secure flag when users reach the gateway over https."""
        return self.public_base.startswith("https://")

    def resolve_admin_token(self) -> str:
        """The admin token: as configured, else read from or created in state_dir.

        Example:
            >>> cfg = GatewayConfig(state_dir="/tmp/gw-doc")
            >>> cfg.resolve_admin_token() == cfg.resolve_admin_token()
            True
        """
        if self.admin_token:
            return self.admin_token
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.admin_token = read_or_create_secret(
            self.state_dir / "admin_token", lambda: secrets.token_urlsafe(32).encode()
        ).decode()
        return self.admin_token

def read_or_create_secret(path: Path, make: Any) -> bytes:
    """Read ``path``; if missing, create it once with ``make()`` and mode 0600.

    Written to a temporary file and hard-linked into place, so two processes
    starting at once agree on one value and nobody ever reads a half-written file.
    """
    if path.exists():
        return path.read_bytes()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, make())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()

def url_host(host: str) -> str:
    """How to write a listening host in a URL (all-interfaces -> 127.0.0.1, IPv6 in brackets)."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
