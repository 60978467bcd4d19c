"""The nouns every part of Mailgate shares, and the one rule for naming a workflow.

Values that cross the durability boundary (a decision resolving a promise, a summary
checkpointed by ``ctx.run``) are plain JSON dicts on the wire; the frozen dataclasses here
convert to and from them so that every writer (gateway, CLI, inbox) produces the same
versioned shape and the workflow reads exactly one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

#: What a person can answer.
Verdict = Literal["approve", "reject"]
#: What settles a round: a person's verdict, the deadline passing, or a cancellation.
Ending = Literal["approve", "reject", "expire", "cancel"]
#: ``cli`` is only ever read back from decisions written before the operator API named itself;
#: ``expiry`` is the clock deciding at a round's deadline.
Via = Literal["link", "reply", "api", "cli", "expiry"]
#: What the submitter chose to happen when a round's deadline passes with no decision.
OnExpiry = Literal["expire", "reject", "approve"]
ON_EXPIRY: tuple[OnExpiry, ...] = ("expire", "reject", "approve")

DECISION_VERSION = 3
#: Decision values this release reads: 1 (release 0.1), 2 (with evidence and a seal), 3 (the
#: clock's and a cancellation's endings besides people's verdicts).
DECISION_VERSIONS = (1, 2, 3)
REQUEST_SCHEMA = 3
#: A reason is prompt input for the next summary; a pasted log must not crowd out the page.
REASON_MAX_CHARS = 4000
WORKFLOW_PREFIX = "mg-"
WORKFLOW_NAME = "approval"
#: The routing group workers listen on; the gateway dispatches every request to it.
WORKER_GROUP = "worker"


def normalize_url(url: str) -> str:
    """Canonical form used for identity: same page, same workflow.

    Scheme and host are case-insensitive and default ports and fragments never reach the
    server, so they must not split one page into two requests.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port and (scheme, port) not in {("http", 80), ("https", 443)}:
        host = f"{host}:{port}"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}" if userinfo else host
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def normalize_email(address: str) -> str:
    return address.strip().lower()


def pair_key(url: str, approver: str) -> str:
    """What makes two submissions "the same request": the page and who decides it."""
    key = f"{normalize_url(url)}\n{normalize_email(approver)}".encode()
    return hashlib.blake2b(key, digest_size=10).hexdigest()


def workflow_id(url: str, approver: str, generation: int = 1) -> str:
    """One workflow per (page, approver); a repeat after it finished is a new generation.

    Hashing keeps ids short and free of ``:``, which the engine reserves for lineage.
    """
    base = f"{WORKFLOW_PREFIX}{pair_key(url, approver)}"
    return base if generation == 1 else f"{base}-{generation}"


def generation_of(request_id: str) -> int:
    tail = request_id.removeprefix(WORKFLOW_PREFIX).rpartition("-")[2]
    return int(tail) if "-" in request_id.removeprefix(WORKFLOW_PREFIX) else 1


@dataclass(frozen=True)
class Seal:
    """The audit chain's head when a durable value was written: its length and newest hash.

    Stored inside decisions and final outcomes, so dropping the newest events of a request's
    trail is detected even though no later event points at them.
    """

    count: int
    hash: str

    def to_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> Seal | None:
        if not isinstance(value, dict) or not isinstance(value.get("count"), int):
            return None
        return cls(value["count"], str(value.get("hash", "")))


@dataclass(frozen=True)
class Decision:
    """A person's (or operator's) answer to one round, as written into the round's promise.

    ``evidence`` is what the channel could see of the decider (a reply's envelope sender, From,
    DKIM result and Message-ID; a link's client address and user agent; the API token's name),
    kept with the decision itself so the audit trail never has to be believed on its own.
    """

    verdict: Ending
    reason: str | None
    by: str
    via: Via
    at: int
    nonce: str
    evidence: dict[str, str] = field(default_factory=dict)
    seal: Seal | None = None

    @property
    def ends_request(self) -> bool:
        """Anything but a person's "no" ends the request; that one asks again."""
        return not (self.verdict == "reject" and self.via != "expiry")

    @classmethod
    def new(
        cls,
        verdict: Ending,
        reason: str | None,
        by: str,
        via: Via,
        at: int,
        evidence: dict[str, str] | None = None,
    ) -> Decision:
        return cls(verdict, clip_reason(reason), by, via, at, secrets.token_hex(8), evidence or {})

    def sealed(self, seal: Seal | None) -> Decision:
        return replace(self, seal=seal)

    def to_value(self) -> dict[str, Any]:
        value = {"v": DECISION_VERSION, **asdict(self)}
        value["seal"] = self.seal.to_value() if self.seal else None
        return value

    @classmethod
    def from_value(cls, value: Any) -> Decision:
        if not isinstance(value, dict) or value.get("v") not in DECISION_VERSIONS:
            msg = f"not a decision this release can read: {value!r}"
            raise ValueError(msg)
        if value.get("verdict") not in ("approve", "reject", "expire", "cancel"):
            msg = f"unknown verdict in decision: {value.get('verdict')!r}"
            raise ValueError(msg)
        evidence = value.get("evidence")
        return cls(
            verdict=value["verdict"],
            reason=value.get("reason"),
            by=str(value.get("by", "")),
            via=value.get("via", "cli"),
            at=int(value.get("at", 0)),
            nonce=str(value.get("nonce", "")),
            evidence=dict(evidence) if isinstance(evidence, dict) else {},
            seal=Seal.from_value(value.get("seal")),
        )


def clip_reason(reason: str | None) -> str | None:
    """A reason is prompt input for the next summary; a pasted log must not crowd out the page."""
    reason = (reason or "").strip() or None
    if reason is not None and len(reason) > REASON_MAX_CHARS:
        reason = reason[: REASON_MAX_CHARS - 1].rstrip() + "…"
    return reason


@dataclass(frozen=True)
class Deadline:
    """How long each round may wait, when its approver is reminded, and what its end means.

    Captured at submission (from ``expires_in``/``on_expiry`` and the reminder settings), so a
    request keeps the schedule it was promised whatever the settings say later. Times are
    milliseconds; ``remind_after_ms`` 0 means no reminders.
    """

    expires_in_ms: int
    remind_after_ms: int
    remind_every_ms: int
    on_expiry: OnExpiry = "expire"

    def to_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> Deadline | None:
        if not isinstance(value, dict):
            return None
        return cls(
            int(value["expires_in_ms"]),
            int(value.get("remind_after_ms", 0)),
            int(value.get("remind_every_ms", 0)),
            value.get("on_expiry", "expire"),
        )

    def reminders(self, asked_at: int) -> list[int]:
        """When the approver of a round asked at ``asked_at`` is reminded: after
        ``remind_after_ms``, then every ``remind_every_ms`` (0: once), always before the
        deadline."""
        if self.remind_after_ms <= 0:
            return []
        deadline = asked_at + self.expires_in_ms
        times: list[int] = []
        at = asked_at + self.remind_after_ms
        while at < deadline:
            times.append(at)
            if self.remind_every_ms <= 0:
                break
            at += self.remind_every_ms
        return times


@dataclass(frozen=True)
class Request:
    """What was submitted, as the workflow receives it and the audit trail records it.

    ``schema`` versions the shape: release 0.1 stored a plain dict without one (read here as
    schema 1), so data dirs written by it keep loading; schema 3 added the ``deadline`` (None
    for older requests: they wait as long as the workflow lives). ``submitted_by`` is the
    authenticated submitter (an API token's name, or ``local`` where no token is configured);
    ``client`` is what the caller said it was (``cli``), an untrusted hint kept next to it.
    """

    url: str
    approver: str
    callback_url: str | None
    submitted_at: int
    submitted_by: str = "unknown"
    client: str | None = None
    nonce: str = ""
    deadline: Deadline | None = None
    schema: int = REQUEST_SCHEMA

    @property
    def pair(self) -> str:
        return pair_key(self.url, self.approver)

    def to_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> Request:
        if not isinstance(value, dict) or not isinstance(value.get("url"), str):
            msg = f"not a submitted request: {value!r}"
            raise ValueError(msg)
        schema = int(value.get("schema", 1))
        if schema > REQUEST_SCHEMA:
            msg = f"request schema {schema} is newer than this release ({REQUEST_SCHEMA})"
            raise ValueError(msg)
        return cls(
            url=value["url"],
            approver=normalize_email(str(value["approver"])),
            callback_url=value.get("callback_url"),
            submitted_at=int(value.get("submitted_at", 0)),
            submitted_by=str(value.get("submitted_by", "unknown")),
            client=value.get("client"),
            nonce=str(value.get("nonce", "")),
            deadline=Deadline.from_value(value.get("deadline")),
            schema=schema,
        )


@dataclass(frozen=True)
class Summary:
    """A round's summary and who wrote it, checkpointed as the summarize step's result."""

    text: str
    summarizer: str
    model: str | None

    def to_value(self) -> dict[str, Any]:
        return {"kind": "summary", **asdict(self)}

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> Summary:
        return cls(value["text"], value["summarizer"], value.get("model"))


@dataclass(frozen=True)
class Ask:
    """Everything a notifier needs to ask a person about one round.

    ``promise_id`` identifies the round durably; notifiers derive idempotent artefacts from it
    (a deterministic Message-ID, the reply token), so a resend after a crash is the same
    message, not a new request. ``reminder`` is 0 for the request itself and N for its Nth
    reminder, which repeats it in the same thread with the very same link and reply address
    (both signed as of ``issued_at``, when the round was first sent); ``expires_at`` is the
    round's deadline (None for requests submitted before deadlines existed).
    """

    request_id: str
    promise_id: str
    first_promise_id: str
    round: int
    url: str
    approver: str
    summary: str
    previous_reason: str | None
    decide_url: str
    expires_at: int | None
    reminder: int = 0
    issued_at: int | None = None


@dataclass(frozen=True)
class Notice:
    """A short note to an approver about a round (it expired, was cancelled, was decided by
    someone else), threaded under the round's email. ``kind`` makes its Message-ID: the same
    note sent twice after a crash is one message to the mail client."""

    request_id: str
    round_id: str
    to: str
    kind: str
    subject: str
    text: str
