"""Signed links and cookies: what they open, when they stop working."""

from __future__ import annotations

import stat

import pytest

from prefect_hpcviz.viz.gateway.tokens import COOKIE, LINK, Signer, TokenError

NOW = 1_800_000_000.0


@pytest.fixture
def signer(tmp_path):
    return Signer.from_state_dir(tmp_path)


def test_a_signed_link_opens_its_visualization_until_it_expires(signer):
    token = signer.sign("viz1", ttl_s=3600, now=NOW)
    claims = signer.verify(token, "viz1", now=NOW + 3599)
    assert (claims.viz_id, claims.kind, claims.expires_at) == ("viz1", LINK, int(NOW + 3600))
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, "viz1", now=NOW + 3600)


def test_a_link_for_one_visualization_does_not_open_another(signer):
    token = signer.sign("viz1", ttl_s=60, now=NOW)
    with pytest.raises(TokenError, match="another visualization"):
        signer.verify(token, "viz2", now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace(".", ".x", 1),  # viz id changed
        lambda t: t.rsplit(".", 2)[0] + ".9999999999." + t.rsplit(".", 1)[1],  # expiry pushed out
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
        lambda t: "cookie" + t[len("link") :],  # kind changed
    ],
    ids=["viz", "expiry", "signature", "kind"],
)
def test_a_tampered_link_is_refused(signer, tamper):
    token = signer.sign("viz1", ttl_s=60, now=NOW)
    with pytest.raises(TokenError):
        signer.verify(tamper(token), "viz1", now=NOW)


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c.d", "link.viz1.notanumber.sig", "link.viz1.1.2.3"])
def test_malformed_tokens_are_refused_with_a_reason(signer, junk):
    with pytest.raises(TokenError) as info:
        signer.verify(junk, "viz1", now=NOW)
    assert info.value.reason


def test_a_cookie_value_is_not_a_link_and_the_other_way_round(signer):
    cookie = signer.sign("viz1", kind=COOKIE, ttl_s=60, now=NOW)
    link = signer.sign("viz1", ttl_s=60, now=NOW)
    assert signer.verify(cookie, "viz1", kind=COOKIE, now=NOW).kind == COOKIE
    with pytest.raises(TokenError, match="cookie token, not a link"):
        signer.verify(cookie, "viz1", kind=LINK, now=NOW)
    with pytest.raises(TokenError, match="link token, not a cookie"):
        signer.verify(link, "viz1", kind=COOKIE, now=NOW)


def test_the_signing_key_is_created_once_private_and_reused(tmp_path):
    first = Signer.from_state_dir(tmp_path)
    key_file = tmp_path / "signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32
    token = first.sign("viz1", ttl_s=60, now=NOW)
    # A restarted gateway reads the same key: old links stay valid.
    assert Signer.from_state_dir(tmp_path).verify(token, "viz1", now=NOW).viz_id == "viz1"
    # Another gateway's key does not accept them.
    with pytest.raises(TokenError, match="signature"):
        Signer.from_state_dir(tmp_path / "other").verify(token, "viz1", now=NOW)
