"""Signed, expiring, visualization-scoped tokens for links and cookies.

A token is ``<kind>.<viz id>.<expiry epoch s>.<HMAC-SHA256>``: the gateway
needs no table of issued links, a token for one visualization never opens
another, and revoking a visualization (in the registry) kills all of its
tokens at once. The key is generated once into ``state_dir/signing.key``
(0600), so links survive a gateway restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from prefect_hpcviz.viz.errors import HpcvizError
from prefect_hpcviz.viz.gateway.config import read_or_create_secret

LINK = "link"
COOKIE = "cookie"
_KINDS = (LINK, COOKIE)


class TokenError(HpcvizError):
    """A token was malformed, tampered with, expired, or for another visualization."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Claims:
    """What a valid token says."""

    kind: str
    viz_id: str
    expires_at: int


class Signer:
    """Makes and checks tokens with one secret key.

    Example:
        >>> signer = Signer(b"k" * 32)
        >>> token = signer.sign("viz1", ttl_s=60)
        >>> signer.verify(token, "viz1").viz_id
        'viz1'
        >>> signer.verify(token, "viz2")
        Traceback (most recent call last):
        ...
        prefect_hpcviz.viz.gateway.tokens.TokenError: this link is for another visualization
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the signing key must be at least 32 bytes")
        self._key = key

    @classmethod
    def from_state_dir(cls, state_dir: str | Path) -> "Signer":
        """Use ``state_dir/signing.key``, creating it (0600) the first time."""
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(read_or_create_secret(state_dir / "signing.key", lambda: secrets.token_bytes(32)))

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, f"hpcviz/1|{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, viz_id: str, *, kind: str = LINK, ttl_s: float, now: float | None = None) -> str:
        """A token for ``viz_id`` valid ``ttl_s`` seconds from ``now``."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}")
        if "." in viz_id:
            raise ValueError("visualization ids cannot contain '.'")
        expires = int((time.time() if now is None else now) + ttl_s)
        body = f"{kind}.{viz_id}.{expires}"
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, viz_id: str, *, kind: str = LINK, now: float | None = None) -> Claims:
        """Check a token; TokenError with a reason a user can read otherwise.

        The signature is checked (in constant time) before anything else.
        """
        parts = (token or "").split(".")
        if len(parts) != 4 or not parts[2].isdigit():
            raise TokenError("this link is incomplete or damaged")
        body, mac = ".".join(parts[:3]), parts[3]
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            raise TokenError("this link is not valid (its signature does not match)")
        claims = Claims(kind=parts[0], viz_id=parts[1], expires_at=int(parts[2]))
        if claims.kind != kind:
            raise TokenError(f"this is a {claims.kind} token, not a {kind} token")
        if not hmac.compare_digest(claims.viz_id.encode(), viz_id.encode()):
            raise TokenError("this link is for another visualization")
        if claims.expires_at <= (time.time() if now is None else now):
            raise TokenError("this link has expired")
        return claims
