"""The audit trail's chain: how an event is sealed, and how a whole trail is checked.

Pure: no IO, secrets and events come in as arguments. Each event's body (every field but its
MAC) is hashed; the next event carries that hash as ``prev``, so an edited, dropped, inserted
or reordered event breaks the chain. Each body is also MACed with a key derived from the
signing secret under a salt of its own (a link token or a session cookie can never pass for an
audit MAC), and names that key by a short id: after rotation an event signed with a retired key
is reported *unverifiable*, not *tampered*. Dropping the newest events leaves a valid shorter
chain, which is why decisions and final outcomes carry a ``Seal`` of the head they saw.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from service.domain import Seal

AUDIT_SALT = b"mailgate.audit.v1"
KEY_ID_SALT = b"mailgate.audit.key-id.v1"
EVENT_VERSION = 1


@dataclass(frozen=True)
class Event:
    """One fact of a request's life, in order.

    ``key`` makes an append idempotent (a step that runs twice records its fact once); ``state``
    and ``row`` are the request's state and listing row *after* this event, so the newest event
    alone answers listings and "is this pair still pending?".
    """

    request_id: str
    seq: int
    at: int
    kind: str
    data: dict[str, Any]
    key: str | None
    state: str
    row: dict[str, Any]
    prev: str
    kid: str = ""
    mac: str = ""
    v: int = EVENT_VERSION

    def body(self) -> bytes:
        fields = asdict(self)
        del fields["mac"]
        return canonical(fields)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.body()).hexdigest()

    def seal(self) -> Seal:
        return Seal(self.seq, self.hash)

    def to_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> Event:
        if not isinstance(value, dict) or value.get("v") != EVENT_VERSION:
            msg = f"not an audit event: {value!r}"
            raise ValueError(msg)
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in value.items() if k in names})


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(secret: str) -> str:
    return hmac.digest(secret.encode(), KEY_ID_SALT, "sha256").hex()[:8]


def _mac(secret: str, body: bytes) -> str:
    key = hmac.digest(secret.encode(), AUDIT_SALT, "sha256")
    return hmac.digest(key, body, "sha256").hex()


def signed(event: Event, secrets: Sequence[str]) -> Event:
    """The event with its MAC under the newest key; ``secrets`` is the rotation list."""
    secret = secrets[-1]
    unsigned = replace(event, kid=key_id(secret), mac="")
    return replace(unsigned, mac=_mac(secret, unsigned.body()))


Verdict = Literal["intact", "tampered", "unverifiable"]


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str


@dataclass(frozen=True)
class Verification:
    """What checking one request's trail found; ``intact`` only when nothing was off."""

    request_id: str
    events: int
    verdict: Verdict
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def verify(
    request_id: str,
    events: Sequence[Event],
    secrets: Sequence[str],
    seals: Iterable[tuple[str, Seal]] = (),
) -> Verification:
    """Check order, links, MACs, and that every seal (``where`` it was found, the seal) points
    at an event the chain still holds with that very hash."""
    keys = {key_id(secret): secret for secret in secrets}
    problems: list[Problem] = []
    unverifiable: list[Problem] = []
    prev = ""
    for expected, event in enumerate(events, start=1):
        if event.request_id != request_id:
            problems.append(Problem(event.seq, f"belongs to {event.request_id}"))
        if event.seq != expected:
            problems.append(Problem(event.seq, f"found where event {expected} should be"))
        if event.prev != prev:
            problems.append(Problem(event.seq, "does not follow the event before it"))
        secret = keys.get(event.kid)
        if secret is None:
            unverifiable.append(Problem(event.seq, f"signed with key {event.kid}, not configured"))
        elif not hmac.compare_digest(event.mac, _mac(secret, event.body())):
            problems.append(Problem(event.seq, "MAC does not match its content"))
        prev = event.hash
    by_seq = {event.seq: event for event in events}
    for where, seal in seals:
        held = by_seq.get(seal.count)
        if held is None:
            problems.append(Problem(seal.count, f"{where} seals event {seal.count}: missing"))
        elif held.hash != seal.hash:
            problems.append(Problem(seal.count, f"{where} seals a different event {seal.count}"))
    if problems:
        return Verification(request_id, len(events), "tampered", problems + unverifiable)
    if unverifiable:
        return Verification(request_id, len(events), "unverifiable", unverifiable)
    return Verification(request_id, len(events), "intact")
