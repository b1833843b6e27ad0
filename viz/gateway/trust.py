"""What the gateway believes about a request: who the user is, and whether it came over https.

Single sign-on: an authenticating proxy in front (oauth2-proxy, an nginx
``auth_request``, Apache mod_auth_openidc) logs the user in and passes the
name on in a header such as ``X-Forwarded-User``. Anybody can send that
header, so the gateway believes it only from the addresses of
``trusted_proxies`` (CIDRs); from anywhere else a request that carries it is
refused, so a misconfigured network shows up at once instead of letting
people name themselves. ``X-Forwarded-Proto: https`` is believed from the same
addresses (a TLS proxy in front makes the cookies Secure).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from aiohttp import web

from prefect_hpcviz.viz.errors import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A user name as identity providers hand them out: e-mail addresses, uids, DNs without commas.
_USER = re.compile(r"^[A-Za-z0-9_.@+=:~-][A-Za-z0-9_.@+=:~ /-]{0,255}$")


def parse_networks(values: list[str], name: str = "trusted_proxies") -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; InputError naming the bad one.

    Example:
        >>> parse_networks(["127.0.0.1", "10.0.0.0/8"])
        (IPv4Network('127.0.0.1/32'), IPv4Network('10.0.0.0/8'))
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise InputError(
                name, f"{value!r} is not an IP address or CIDR", "give e.g. 127.0.0.1/32 or 10.0.0.0/8"
            ) from None
    return tuple(networks)


class Refused(Exception):
    """The request claims something the gateway does not believe; ``status`` and a message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Trust:
    """Trusted proxy addresses and the single sign-on header (None: no SSO).

    Example:
        >>> trust = Trust(parse_networks(["127.0.0.1/32"]), user_header="X-Forwarded-User")
        >>> trust.is_proxy("127.0.0.1"), trust.is_proxy("192.0.2.7")
        (True, False)
    """

    proxies: tuple[Network, ...] = ()
    user_header: str | None = None

    @property
    def sso(self) -> bool:
        """True when users are identified by the proxy's user header."""
        return self.user_header is not None

    def is_proxy(self, address: str | None) -> bool:
        """Whether a peer address (``request.remote``) is one of the trusted proxies."""
        if not address or not self.proxies:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.proxies)

    def user(self, request: web.Request) -> str | None:
        """The signed-in user (SSO mode), None without SSO; Refused when the claim is not believable."""
        if self.user_header is None:
            return None
        values = request.headers.getall(self.user_header, [])
        if not self.is_proxy(request.remote):
            if values:
                raise Refused(
                    403,
                    f"the {self.user_header} header is accepted only from the gateway's trusted proxies, "
                    f"not from {request.remote}; sign in through the site's login address",
                )
            raise Refused(401, "sign in first: this gateway is reached through the site's login proxy")
        if len(values) != 1 or not _USER.match(values[0].strip()):
            raise Refused(
                401, f"the login proxy sent no usable {self.user_header} header; sign in again"
            )
        return values[0].strip()

    def https(self, request: web.Request, public_https: bool) -> bool:
        """Whether the user reached us over https: the public URL says so, or a trusted proxy does."""
        if public_https or request.scheme == "https":
            return True
        proto = request.headers.get("X-Forwarded-Proto", "")
        return proto.split(",")[0].strip().lower() == "https" and self.is_proxy(request.remote)
