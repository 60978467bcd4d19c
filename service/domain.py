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

Verdict = Literal["approve", "reject"]
#: ``cli`` is only ever read back from decisions written before the operator API named itself.
Via = Literal["link", "reply", "api", "cli"]

DECISION_VERSION = 2
#: Decision values this release reads: version 1 (before the audit trail) and its own.
DECISION_VERSIONS = (1, 2)
REQUEST_SCHEMA = 2
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

    verdict: Verdict
    reason: str | None
    by: str
    via: Via
    at: int
    nonce: str
    evidence: dict[str, str] = field(default_factory=dict)
    seal: Seal | None = None

    @classmethod
    def new(
        cls,
        verdict: Verdict,
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
        if value.get("verdict") not in ("approve", "reject"):
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
class Request:
    """What was submitted, as the workflow receives it and the audit trail records it.

    ``schema`` versions the shape: release 0.1 stored a plain dict without one (read here as
    schema 1), so data dirs written by it keep loading. ``submitted_by`` is the authenticated
    submitter (an API token's name, or ``local`` where no token is configured); ``client`` is
    what the caller said it was (``cli``), an untrusted hint kept next to it.
    """

    url: str
    approver: str
    callback_url: str | None
    submitted_at: int
    submitted_by: str = "unknown"
    client: str | None = None
    nonce: str = ""
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
    message, not a new request.
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
    expires_at: int
