"""Which web pages may open a websocket to the gateway: the Origin check.

Browsers send cookies with a websocket handshake whatever page opened it, and
the same-origin policy does not apply to websockets; the only defence
against another site opening a user's session in the background
(cross-site websocket hijacking) is the handshake's ``Origin`` header. The
gateway accepts an upgrade when that header is the origin of its public URL
or one of the operator's ``allowed_origins``; anything else, including the
``null`` origin of sandboxed frames and ``file://`` pages, gets 403 before
any backend connection is made. A handshake without ``Origin`` is not from a
browser (scripts and test clients): it carries no ambient cookie risk and is
let through to the usual cookie check.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from prefect_hpcviz.viz.errors import InputError

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-case, default port left out.

    Example:
        >>> origin_of("HTTPS://Viz.Example.org:443/hpcviz/")
        'https://viz.example.org'
        >>> origin_of("http://127.0.0.1:8765")
        'http://127.0.0.1:8765'
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InputError(url, "is not an http(s) origin", "give e.g. https://viz.example.org")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


class OriginPolicy:
    """The origins whose pages may open websockets through the gateway.

    Args:
        public_base: the gateway's public URL; its origin is always allowed.
        extra: more origins (e.g. a portal that embeds the viewer).
        loopback_aliases: also allow ``localhost``/``127.0.0.1``/``[::1]`` on
            the public URL's port (used when no public URL was configured, so
            a gateway on a laptop works whichever loopback name the browser uses).

    Example:
        >>> policy = OriginPolicy("https://viz.example.org/hpcviz", ["https://portal.example.org"])
        >>> policy.allows("https://viz.example.org"), policy.allows(None)
        (True, True)
        >>> policy.allows("https://evil.example.com"), policy.allows("null")
        (False, False)
    """

    def __init__(self, public_base: str, extra: list[str] = (), *, loopback_aliases: bool = False) -> None:
        public = origin_of(public_base)
        allowed = {public, *(origin_of(o) for o in extra)}
        if loopback_aliases:
            parts = urlsplit(public)
            suffix = f":{parts.port}" if parts.port else ""
            allowed.update(f"{parts.scheme}://{host}{suffix}" for host in _LOOPBACK)
        self.allowed = frozenset(allowed)

    def allows(self, origin: str | None) -> bool:
        """True for an allowed origin, or no Origin header at all (not a browser)."""
        if origin is None:
            return True
        try:
            return origin_of(origin) in self.allowed and origin.count("/") == 2
        except InputError:
            return False
