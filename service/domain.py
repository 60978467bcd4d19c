"""The nouns every part of Mailgate shares, and the one rule for naming a workflow.

Values that cross the durability boundary (a decision resolving a promise, a summary
checkpointed by ``ctx.run``) are plain JSON dicts on the wire; the frozen dataclasses here
convert to and from them so that every writer (gateway, CLI, inbox) produces the same
versioned shape and the workflow reads exactly one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

Verdict = Literal["approve", "reject"]
Via = Literal["link", "reply", "cli"]

DECISION_VERSION = 1
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


def workflow_id(url: str, approver: str, generation: int = 1) -> str:
    """One workflow per (page, approver); a repeat after it finished is a new generation.

    Hashing keeps ids short and free of ``:``, which the engine reserves for lineage.
    """
    key = f"{normalize_url(url)}\n{normalize_email(approver)}".encode()
    digest = hashlib.blake2b(key, digest_size=10).hexdigest()
    base = f"{WORKFLOW_PREFIX}{digest}"
    return base if generation == 1 else f"{base}-{generation}"


def generation_of(request_id: str) -> int:
    tail = request_id.removeprefix(WORKFLOW_PREFIX).rpartition("-")[2]
    return int(tail) if "-" in request_id.removeprefix(WORKFLOW_PREFIX) else 1


@dataclass(frozen=True)
class Decision:
    """A person's answer to one round, as written into the round's promise."""

    verdict: Verdict
    reason: str | None
    by: str
    via: Via
    at: int
    nonce: str

    @classmethod
    def new(cls, verdict: Verdict, reason: str | None, by: str, via: Via, at: int) -> Decision:
        reason = (reason or "").strip() or None
        if reason is not None and len(reason) > REASON_MAX_CHARS:
            reason = reason[: REASON_MAX_CHARS - 1].rstrip() + "…"
        return cls(verdict, reason, by, via, at, secrets.token_hex(8))

    def to_value(self) -> dict[str, Any]:
        return {"v": DECISION_VERSION, **asdict(self)}

    @classmethod
    def from_value(cls, value: Any) -> Decision:
        if not isinstance(value, dict) or value.get("v") != DECISION_VERSION:
            msg = f"not a version {DECISION_VERSION} decision: {value!r}"
            raise ValueError(msg)
        if value.get("verdict") not in ("approve", "reject"):
            msg = f"unknown verdict in decision: {value.get('verdict')!r}"
            raise ValueError(msg)
        return cls(
            verdict=value["verdict"],
            reason=value.get("reason"),
            by=str(value.get("by", "")),
            via=value.get("via", "cli"),
            at=int(value.get("at", 0)),
            nonce=str(value.get("nonce", "")),
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
