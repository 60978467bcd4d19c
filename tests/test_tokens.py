"""Decision links: only an untouched, unexpired token minted with our key verifies."""

from __future__ import annotations

import pytest

from service import tokens
from service.errors import BadToken, ExpiredToken

KEYS = ("k-old", "k-new")
T0 = 1_800_000_000_000
DAY_S = 86400


def mint(promise_id: str = "mg-abc:2", approver: str = "alice@example.com", **kw) -> str:
    return tokens.mint(
        promise_id, approver, secrets=kw.get("secrets", KEYS), now_ms=kw.get("now", T0)
    )


def verify(token: str, *, now: int = T0 + 1000, secrets=KEYS) -> tokens.LinkToken:
    return tokens.verify(token, secrets=secrets, ttl_s=7 * DAY_S, now_ms=now)


def test_round_trip_binds_promise_and_approver():
    link = verify(mint())
    assert (link.promise_id, link.approver, link.signed_at) == (
        "mg-abc:2",
        "alice@example.com",
        T0 // 1000,
    )


def test_forged_with_another_key_is_refused():
    with pytest.raises(BadToken):
        verify(mint(secrets=("attacker",)))


@pytest.mark.parametrize("position", [0, 10, -1, -10])
def test_altered_token_is_refused(position: int):
    token = mint()
    flipped = "A" if token[position] != "A" else "B"
    altered = (
        token[:position] + flipped + token[position + 1 :]
        if position != -1
        else token[:-1] + flipped
    )
    with pytest.raises(BadToken):
        verify(altered)


def test_expired_token_says_when_it_was_signed():
    with pytest.raises(ExpiredToken) as caught:
        verify(mint(), now=T0 + 7 * DAY_S * 1000 + 2000)
    assert caught.value.signed_at == T0 // 1000


def test_token_from_the_future_is_refused():
    with pytest.raises(ExpiredToken):
        verify(mint(now=T0 + 3_600_000), now=T0)


def test_rotation_accepts_old_key_and_signs_with_newest():
    old = tokens.mint("mg-a:2", "a@example.com", secrets=("k-old",), now_ms=T0)
    assert verify(old).promise_id == "mg-a:2"
    with pytest.raises(BadToken):
        verify(mint(), secrets=("k-old",))


def test_session_cookie_is_not_a_decision_link():
    cookie = tokens.sign_session("dashboard", secrets=KEYS, now_ms=T0)
    with pytest.raises(BadToken):
        verify(cookie)


@pytest.mark.parametrize("garbage", ["", "x", "a.b.c", "%00", "eyJwIjoibWctYSJ9.AAAA.BBBB"])
def test_garbage_is_refused(garbage: str):
    with pytest.raises(BadToken):
        verify(garbage)
