"""Signed decision links: one token per round, bound to the round's promise and its approver.

itsdangerous does the signing, the constant-time comparison and key rotation (a list of keys,
oldest first, the newest signs). The salt names the purpose, so a token minted for anything
else (a reply address, a session cookie) never verifies here. Time is an argument, so the
expiry rule is testable without freezing the process clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from service.errors import BadToken, ExpiredToken

LINK_SALT = "mailgate.decide.v1"
SESSION_SALT = "mailgate.session.v1"


@dataclass(frozen=True)
class LinkToken:
    promise_id: str
    approver: str
    signed_at: int


def _serializer(secrets: Sequence[str], salt: str, now_ms: int) -> URLSafeTimedSerializer:
    if not secrets:
        msg = "no signing secret configured"
        raise ValueError(msg)

    class _Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return now_ms // 1000

    return URLSafeTimedSerializer(list(secrets), salt=salt, signer=_Signer)


def mint(promise_id: str, approver: str, *, secrets: Sequence[str], now_ms: int) -> str:
    payload = {"p": promise_id, "a": approver}
    return str(_serializer(secrets, LINK_SALT, now_ms).dumps(payload))


def verify(token: str, *, secrets: Sequence[str], ttl_s: float, now_ms: int) -> LinkToken:
    serializer = _serializer(secrets, LINK_SALT, now_ms)
    try:
        payload, signed = serializer.loads(token, max_age=int(ttl_s), return_timestamp=True)
    except SignatureExpired as exc:
        signed_at = int(exc.date_signed.timestamp()) if exc.date_signed else 0
        raise ExpiredToken(signed_at) from None
    except BadData:
        raise BadToken("this decision link is not valid") from None
    if not isinstance(payload, dict) or not {"p", "a"} <= payload.keys():
        raise BadToken("this decision link is not valid")
    return LinkToken(str(payload["p"]), str(payload["a"]), int(signed.timestamp()))


def sign_session(value: str, *, secrets: Sequence[str], now_ms: int) -> str:
    return str(_serializer(secrets, SESSION_SALT, now_ms).dumps(value))


def verify_session(cookie: str, *, secrets: Sequence[str], ttl_s: float, now_ms: int) -> str:
    try:
        value = _serializer(secrets, SESSION_SALT, now_ms).loads(cookie, max_age=int(ttl_s))
    except BadData:
        raise BadToken("session is not valid") from None
    return str(value)
