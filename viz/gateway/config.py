"""Gateway settings: where it listens, what it calls itself, limits and trust.

Everything has a safe default for a laptop; a site changes ``public_url``,
``internal_url`` (how compute nodes reach the gateway), ``allowed_backend_hosts``
(which nodes may serve) and the default launcher.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.paths import hpcviz_home
from prefect_hpcviz.viz.gateway.origin import origin_of
from prefect_hpcviz.viz.gateway.trust import parse_networks

_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_EXAMPLES = {"trusted_proxies": '["127.0.0.1/32", "10.0.0.0/8"]', "allowed_origins": '["https://portal.example.org"]'}

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
        max_lifetime_s: a session this old (seconds since its launch) is stopped,
            busy or not; its page then says so and offers "Start again".
            None: no limit.
        launch_timeout_s: a session not ready this long after launch has failed
            (time a batch job waits in its scheduler's queue does not count).
        hold_first_page_s: how long the page request that starts a server waits
            for it before answering with the waiting page; a server that is ready
            by then (a standby) is shown at once, saving the waiting page's reload.
        reverse_redial_s: after a gateway restart, how long a request to a
            reverse-mode session waits for its server to dial the new process
            before the session counts as ended (servers dial again within ~1 s).
        allowed_backend_hosts: regex a ready report's host must match (SSRF guard).
        default_launcher: ``{"kind", "options"}`` used when a registration gives none.
        poll_interval_s: how often jobs are checked and idle sessions culled.
        reap_interval_s: how often the registry is reconciled with the
            launchers' list of their jobs (jobs no active session has are
            stopped). Listing is one ``squeue`` per Slurm launcher, so this is
            slower than ``poll_interval_s``; ``POST /api/cull`` reconciles at once.
        max_ws_message: largest websocket message proxied, either direction.
        access_log: log one line per request (``hpcviz gateway`` only; link
            tokens redacted). Off by default: it costs about 20 us a request.
        metrics_public: serve ``/metrics`` without authentication (scrape from
            a trusted network only); False: it needs the admin bearer token.
        trusted_proxies: addresses or CIDRs of the reverse proxies in front
            (e.g. ``["127.0.0.1/32"]``); only from them are ``user_header``
            and ``X-Forwarded-Proto`` believed.
        user_header: single sign-on: the header an authenticating proxy sets
            to the signed-in user (e.g. ``X-Forwarded-User``). When set, every
            ``/v/`` and ``/s/`` request needs it from a trusted proxy, sessions
            belong to the user who started them and other users get 403.
            None: no single sign-on (the link alone decides).
        allowed_origins: origins (``https://portal.example.org``) whose pages
            may open websockets through the gateway, besides the public URL's.

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
    reverse_redial_s: float = 10.0
    allowed_backend_hosts: str = LOOPBACK_HOSTS
    default_launcher: dict[str, Any] = field(default_factory=lambda: {"kind": "local", "options": {}})
    poll_interval_s: float = 5.0
    reap_interval_s: float = 60.0
    max_ws_message: int = 64 * 1024 * 1024
    max_lifetime_s: float | None = None
    metrics_public: bool = False
    access_log: bool = False
    trusted_proxies: list[str] = field(default_factory=list)
    user_header: str | None = None
    allowed_origins: list[str] = field(default_factory=list)

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
        for name in ("link_ttl_s", "cookie_ttl_s", "idle_timeout_s", "launch_timeout_s", "poll_interval_s",
                     "reap_interval_s"):
            if getattr(self, name) <= 0:
                raise InputError(name, "must be positive", f"give a number of seconds > 0 for {name}")
        for name in ("trusted_proxies", "allowed_origins"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [part for part in value.split(",") if part.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise InputError(name, f"{value!r} is not a list of strings", f"give e.g. {_EXAMPLES[name]}")
            setattr(self, name, [v.strip() for v in value])
        parse_networks(self.trusted_proxies)
        for origin in self.allowed_origins:
            origin_of(origin)
        if self.user_header is not None:
            if not _HEADER_NAME.match(self.user_header):
                raise InputError(
                    "user_header", f"{self.user_header!r} is not a header name", "give e.g. X-Forwarded-User"
                )
            if not self.trusted_proxies:
                raise InputError(
                    "user_header",
                    "single sign-on needs the addresses of the proxies allowed to set it",
                    "also give trusted_proxies (--trusted-proxy), e.g. 127.0.0.1/32",
                )
        if self.max_lifetime_s is not None and self.max_lifetime_s <= 0:
            raise InputError(
                "max_lifetime_s", "must be positive", "give a number of seconds > 0, or leave it unset for no limit"
            )

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

def field_names() -> list[str]:
    """The settings a config file may name (GatewayConfig's fields)."""
    return [f.name for f in fields(GatewayConfig)]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read gateway settings from a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file.

    Keys are GatewayConfig field names; values are checked against the
    field's type. InputError names the file, the key and the fix.

    Example:
        >>> _ = Path("/tmp/hpcviz-doc-gw.yaml").write_text("{port: 9000, max_lifetime_s: 28800}")
        >>> read_config_file("/tmp/hpcviz-doc-gw.yaml")
        {'port': 9000, 'max_lifetime_s': 28800}
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(str(path), f"cannot read the config file ({exc.strerror})", "check the path") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(str(path), f"is not valid YAML ({exc})", "fix the syntax") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise InputError(str(path), "TOML needs Python 3.11+", "write the file as YAML instead") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(str(path), f"is not valid TOML ({exc})", "fix the syntax") from None
    else:
        raise InputError(
            str(path), f"unknown config file type {suffix or '(none)'!r}", "name it .yaml, .yml or .toml"
        )
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(str(path), "is not a mapping of setting: value", "write e.g. 'port: 8765'")
    known = field_names()
    for key, value in data.items():
        if key not in known:
            raise InputError(
                f"{path}: {key}", "is not a gateway setting", f"use one of {', '.join(known)}"
            )
        expected = _FIELD_TYPES[key]
        if not _has_type(value, expected):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in expected)
            raise InputError(f"{path}: {key}", f"{value!r} is not {names}", f"give {key} a value of type {names}")
    return dict(data)


def _field_types() -> dict[str, tuple[type, ...]]:
    words = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "None": (type(None),),
             "Path": (str,), "dict": (dict,), "list": (list,)}  # fmt: skip
    out = {}
    for f in fields(GatewayConfig):
        names = [part.strip().split("[")[0] for part in str(f.type).split("|")]
        out[f.name] = tuple(t for name in names for t in words[name])
    return out


def _has_type(value: Any, expected: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in expected:
        return False  # YAML's true is not a number of seconds
    return isinstance(value, expected)


_FIELD_TYPES = _field_types()


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
