from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import tokens
from service.domain import workflow_id
from service.errors import BadToken
from service.reply_tokens import (
    REPLY_SALT,
    TOKEN_MAX_CHARS,
    ReplyToken,
    _sign,
    mint_reply_token,
    verify_reply_token,
)

SECRETS = ["only-key-for-tests"]
NOW_MS = 1_767_261_600_123
BASE32_LOWER = re.compile(r"[a-z2-7]+")

digests = st.binary(min_size=10, max_size=10).map(bytes.hex)
generations = st.one_of(st.just(1), st.integers(min_value=2, max_value=2**16 - 1))
sequences = st.integers(min_value=0, max_value=2**32 - 1)
times_ms = st.integers(min_value=0, max_value=(2**32 - 1) * 1000 + 999)


@st.composite
def promise_ids(draw: st.DrawFn) -> str:
    digest, generation = draw(digests), draw(generations)
    workflow = f"mg-{digest}" if generation == 1 else f"mg-{digest}-{generation}"
    return f"{workflow}:{draw(sequences)}"


@given(promise_id=promise_ids(), now=times_ms)
def test_token_round_trips_the_promise_id_and_fits_a_local_part(promise_id: str, now: int) -> None:
    token = mint_reply_token(promise_id, secrets=SECRETS, now=now)

    assert len(token) <= TOKEN_MAX_CHARS
    assert len(f"reply+{token}") <= 64
    assert BASE32_LOWER.fullmatch(token)
    expected = ReplyToken(promise_id, now // 1000 * 1000)
    assert verify_reply_token(token, secrets=SECRETS) == expected
    assert verify_reply_token(token.upper(), secrets=SECRETS) == expected


def test_ids_made_by_the_domain_rule_round_trip() -> None:
    for generation in (1, 2, 3, 117):
        promise_id = f"{workflow_id('https://example.com/a', 'ann@example.com', generation)}:4"
        token = mint_reply_token(promise_id, secrets=SECRETS, now=NOW_MS)
        assert verify_reply_token(token, secrets=SECRETS).promise_id == promise_id


@given(
    promise_id=promise_ids(),
    position=st.integers(min_value=0),
    replacement=st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"),
)
def test_any_altered_character_is_refused(promise_id: str, position: int, replacement: str) -> None:
    token = mint_reply_token(promise_id, secrets=SECRETS, now=NOW_MS)
    index = position % len(token)
    if token[index] == replacement:
        replacement = "a" if replacement != "a" else "b"
    altered = token[:index] + replacement + token[index + 1 :]

    with pytest.raises(BadToken):
        verify_reply_token(altered, secrets=SECRETS)


def test_a_token_of_another_key_is_refused() -> None:
    token = mint_reply_token("mg-00112233445566778899:3", secrets=["someone-else"], now=NOW_MS)

    with pytest.raises(BadToken):
        verify_reply_token(token, secrets=SECRETS)


def test_rotation_signs_with_the_newest_key_and_accepts_every_listed_key() -> None:
    promise_id = "mg-00112233445566778899-2:7"
    old = mint_reply_token(promise_id, secrets=["old"], now=NOW_MS)
    new = mint_reply_token(promise_id, secrets=["old", "new"], now=NOW_MS)

    assert verify_reply_token(old, secrets=["old", "new"]).promise_id == promise_id
    assert verify_reply_token(new, secrets=["new"]).promise_id == promise_id
    with pytest.raises(BadToken):
        verify_reply_token(new, secrets=["old"])
    with pytest.raises(BadToken):
        verify_reply_token(old, secrets=["new"])


def test_the_same_fields_signed_with_the_link_salt_are_refused() -> None:
    token = mint_reply_token("mg-00112233445566778899:3", secrets=SECRETS, now=NOW_MS)
    raw = _unpadded_b32decode(token)
    payload = raw[:-12]
    link_salted = payload + _sign(payload, SECRETS[0], tokens.LINK_SALT.encode())
    reply_salted = payload + _sign(payload, SECRETS[0], REPLY_SALT)
    assert _b32(reply_salted) == token

    with pytest.raises(BadToken):
        verify_reply_token(_b32(link_salted), secrets=SECRETS)


def test_a_decision_link_token_is_not_a_reply_token() -> None:
    link = tokens.mint("mg-00112233445566778899:3", "ann@example.com", secrets=SECRETS, now_ms=0)

    with pytest.raises(BadToken):
        verify_reply_token(link, secrets=SECRETS)
    with pytest.raises(BadToken):
        verify_reply_token(link.lower(), secrets=SECRETS)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: t[:-1],
        lambda t: t[:-8],
        lambda t: t + "a",
        lambda t: t + "=" * 3,
        lambda t: t + "a" * 40,
        lambda t: f" {t}",
        lambda t: t.replace(t[5], "1"),
        lambda t: _b32(b"\x02" + _unpadded_b32decode(t)[1:]),
    ],
    ids=[
        "empty",
        "one-char-short",
        "truncated",
        "one-char-long",
        "padded",
        "too-long",
        "whitespace",
        "outside-alphabet",
        "other-version",
    ],
)
def test_malformed_tokens_are_refused(mangle: object) -> None:
    token = mint_reply_token("mg-00112233445566778899:3", secrets=SECRETS, now=NOW_MS)

    with pytest.raises(BadToken):
        verify_reply_token(mangle(token), secrets=SECRETS)  # type: ignore[operator]


@pytest.mark.parametrize(
    "promise_id",
    [
        "mg-00112233445566778899",
        "mg-00112233445566778899:1.2",
        "mg-00112233445566778899-1:1",
        "mg-00112233445566778899-02:1",
        "mg-00112233445566778899-65536:1",
        "mg-00112233445566778899:4294967296",
        "mg-00112233445566778899:01",
        "mg-00112233445566778899aa:1",
        "mg-001122334455667788ZZ:1",
        "MG-00112233445566778899:1",
        "other:1",
    ],
)
def test_ids_that_cannot_be_packed_exactly_are_refused_at_mint(promise_id: str) -> None:
    with pytest.raises(ValueError, match="cannot pack promise id"):
        mint_reply_token(promise_id, secrets=SECRETS, now=NOW_MS)


def test_minting_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="no signing secret"):
        mint_reply_token("mg-00112233445566778899:3", secrets=[], now=NOW_MS)


def test_verifying_with_no_secret_refuses() -> None:
    token = mint_reply_token("mg-00112233445566778899:3", secrets=SECRETS, now=NOW_MS)

    with pytest.raises(BadToken):
        verify_reply_token(token, secrets=[])


def _unpadded_b32decode(token: str) -> bytes:
    return base64.b32decode(token.upper() + "=" * (-len(token) % 8))


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()
