"""Reply-address tokens: ``reply+<token>@<reply domain>`` names one round's promise.

The inbox receives nothing but the recipient address, so the token must carry the promise id
itself, authenticated. It must also fit an address local part (at most 58 characters after
``reply+``) and survive MTAs that change the case of local parts. No token library fits:
itsdangerous writes the value as text beside a mixed-case base64 signature, and JWT, Fernet,
Branca and PASETO are mixed-case too and longer than 58 characters before any payload. So this
module packs the fields by hand and writes them in lowercase base32, with the standard
library's HMAC (an accepted exception to "prefer a library").

Packed fields, big-endian: format version (1 byte), the workflow id's 10-byte digest, its
generation (2 bytes), the promise's sequence number (4 bytes), the issue time in seconds
(4 bytes), then an HMAC-SHA256 truncated to 96 bits. 33 bytes make 53 characters.

Promise ids are assigned by the SDK as ``<workflow id>:<n>`` and workflow ids are
``mg-<20 hex>`` or ``mg-<20 hex>-<generation>`` (``service.domain.workflow_id``); both shapes are
packed losslessly (and rebuilt with the SDK's rule, ``ledger.ids.call_id``), and anything else
is refused at mint time rather than minted ambiguously.

The MAC key is derived from each secret with a salt of its own, so a link token, a session
cookie or any other HMAC made with the same secret never verifies as a reply token. Secrets are
a rotation list, oldest first: the newest signs, any of them verifies.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from service.errors import BadToken
from service.ledger.ids import call_id

REPLY_SALT = b"mailgate.reply-address.v1"
TOKEN_MAX_CHARS = 58

_VERSION = 1
_FIELDS = struct.Struct(">B10sHII")
_MAC_BYTES = 12
_PROMISE_ID = re.compile(r"mg-([0-9a-f]{20})(?:-([2-9]|[1-9][0-9]+))?:(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class ReplyToken:
    promise_id: str
    issued_at: int
    """Epoch milliseconds, to the second."""


def mint_reply_token(promise_id: str, *, secrets: Sequence[str], now: int) -> str:
    """Sign ``promise_id`` for a reply address; ``now`` is epoch milliseconds."""
    if not secrets:
        msg = "no signing secret configured"
        raise ValueError(msg)
    payload = _pack(promise_id, now // 1000)
    return _encode(payload + _sign(payload, secrets[-1], REPLY_SALT))


def verify_reply_token(token: str, *, secrets: Sequence[str]) -> ReplyToken:
    """Recover the promise id from a token minted with any key of ``secrets``.

    Case is ignored, because mail servers may fold the local part. Expiry is not judged here:
    whether the round still waits is the inbox's question.
    """
    raw = _decode(token)
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if len(payload) != _FIELDS.size or payload[0] != _VERSION:
        raise BadToken("this reply address is not valid")
    matches = [hmac.compare_digest(mac, _sign(payload, s, REPLY_SALT)) for s in secrets]
    if not any(matches):
        raise BadToken("this reply address is not valid")
    return _unpack(payload)


def _pack(promise_id: str, issued_s: int) -> bytes:
    match = _PROMISE_ID.fullmatch(promise_id)
    if not match:
        msg = f"cannot pack promise id {promise_id!r}: expected mg-<20 hex>[-<gen>]:<n>"
        raise ValueError(msg)
    digest, generation, sequence = match.groups()
    try:
        return _FIELDS.pack(
            _VERSION, bytes.fromhex(digest), int(generation or 1), int(sequence), issued_s
        )
    except struct.error as exc:
        msg = f"cannot pack promise id {promise_id!r} issued at {issued_s}s: {exc}"
        raise ValueError(msg) from exc


def _unpack(payload: bytes) -> ReplyToken:
    _, digest, generation, sequence, issued_s = _FIELDS.unpack(payload)
    workflow = f"mg-{digest.hex()}" if generation == 1 else f"mg-{digest.hex()}-{generation}"
    return ReplyToken(call_id(workflow, sequence), issued_s * 1000)


def _sign(payload: bytes, secret: str, salt: bytes) -> bytes:
    key = hmac.digest(secret.encode(), salt, "sha256")
    return hmac.digest(key, payload, "sha256")[:_MAC_BYTES]


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _decode(token: str) -> bytes:
    """Strict base32: one spelling per token, so a token cannot be varied and still verify."""
    text = token.lower()
    if not text or len(text) > TOKEN_MAX_CHARS:
        raise BadToken("this reply address is not valid")
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise BadToken("this reply address is not valid") from None
    if _encode(raw) != text:
        raise BadToken("this reply address is not valid")
    return raw
