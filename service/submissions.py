"""Starting a request: validation, one workflow per (URL, approver), and the dispatch to workers.

The gateway never runs a workflow itself: the ledger creates the root promise by ``rpc`` to the
worker group, so the same code works embedded and against a remote engine. Submitting a pair
that is still known returns the existing request; ``repeat`` starts the next generation only
once the previous one has finished.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import httpx
from email_validator import EmailNotValidError, validate_email

from service.domain import (
    ON_EXPIRY,
    Deadline,
    Quorum,
    Request,
    generation_of,
    normalize_email,
    normalize_url,
    workflow_id,
)
from service.durations import format_duration, parse_duration
from service.errors import MailgateError
from service.ledger import Ledger
from service.status import FINISHED_STATES
from service.steps.guard import host_refusal


class InvalidSubmission(MailgateError):
    """The submission cannot be accepted; the message says which field and why."""


#: A reason is recorded with the decision and given to the next round's summary; a page of
#: text is plenty, and a body of megabytes would go into every later prompt.
REASON_CHARS_MAX = 5000
#: Characters that reorder what follows them on screen ("Trojan Source"): a reason shown in the
#: audit timeline must read as it was written.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class Policy:
    allowed_approvers: Sequence[str]
    allow_private_urls: bool
    workflow_timeout_s: float
    decision_ttl_s: float
    remind_after_s: float
    remind_every_s: float


@dataclass(frozen=True)
class Submitted:
    id: str
    created: bool


async def submit(
    ledger: Ledger,
    *,
    url: object,
    email: object,
    callback_url: object = None,
    repeat: bool = False,
    policy: Policy,
    now_ms: int,
    submitted_by: str,
    client: str | None = None,
    version: int,
    expires_in: object = None,
    on_expiry: object = None,
    approvers: object = None,
    quorum: object = None,
    escalate_to: object = None,
    escalate_after: object = None,
) -> Submitted:
    page = check_url(url, "url", policy)
    people = check_approvers(email, approvers, policy)
    callback = check_url(callback_url, "callback_url", policy) if callback_url else None
    deadline = check_deadline(expires_in, on_expiry, policy)
    escalation = check_escalation(escalate_to, escalate_after, people, deadline, policy)
    request = Request(
        url=page,
        approvers=people,
        callback_url=callback,
        submitted_at=now_ms,
        submitted_by=submitted_by,
        client=client,
        nonce=secrets.token_hex(8),
        deadline=deadline,
        quorum=check_quorum(quorum, people),
        escalate_to=escalation[0],
        escalate_after_ms=escalation[1],
    )

    found = await ledger.latest(request.pair)
    generation = 1
    if found is not None:
        if found.state not in FINISHED_STATES or not repeat:
            return Submitted(found.request_id, created=False)
        generation = generation_of(found.request_id) + 1
    request_id = workflow_id(page, people, generation, request.quorum)

    created = await ledger.start(
        request_id,
        request,
        timeout=timedelta(seconds=policy.workflow_timeout_s),
        version=version,
    )
    return Submitted(request_id, created=created)


def check_url(value: object, field: str, policy: Policy) -> str:
    """Shape, and hosts refused however they resolve; where a name leads is checked by the
    fetcher's guard when it is fetched."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidSubmission(f"{field}: a URL is required")
    hidden = next((c for c in value.strip() if unicodedata.category(c) in ("Cc", "Cf")), None)
    if hidden is not None:
        raise InvalidSubmission(f"{field}: {_described(hidden)} is not allowed in a URL")
    try:
        parsed = httpx.URL(value.strip())
    except httpx.InvalidURL as exc:
        raise InvalidSubmission(f"{field}: not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidSubmission(f"{field}: only http and https URLs are accepted")
    if not parsed.host:
        raise InvalidSubmission(f"{field}: the URL has no host")
    try:
        parsed.host.encode("idna")
    except UnicodeError:
        raise InvalidSubmission(f"{field}: {parsed.host} is not a valid host name") from None
    refused = host_refusal(parsed.host, allow_private=policy.allow_private_urls)
    if refused is not None:
        raise InvalidSubmission(f"{field}: {refused}")
    return normalize_url(str(parsed))


def check_reason(value: object) -> str | None:
    """A decision's or a cancellation's reason: free text in any script, on several lines."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidSubmission("reason: text, when given")
    if len(value) > REASON_CHARS_MAX:
        raise InvalidSubmission(f"reason: at most {REASON_CHARS_MAX} characters")
    for char in value:
        if char in _BIDI_CONTROLS or (unicodedata.category(char) == "Cc" and char not in "\t\n\r"):
            raise InvalidSubmission(f"reason: {_described(char)} is not allowed")
    return value


def _described(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def check_deadline(expires_in: object, on_expiry: object, policy: Policy) -> Deadline:
    """Each round's deadline (``expires_in``: a duration like ``3d`` or seconds; the
    configured MAILGATE_DECISION_TTL when absent) and what its passing means. Approval by
    expiry must be asked for by name."""
    if expires_in is None or expires_in == "":
        seconds = policy.decision_ttl_s
    else:
        if isinstance(expires_in, bool) or not isinstance(expires_in, str | int | float):
            raise InvalidSubmission("expires_in: a duration like 90s, 15m, 24h or 7d")
        try:
            seconds = parse_duration(expires_in)
        except ValueError as exc:
            raise InvalidSubmission(f"expires_in: {exc}") from None
    if not 1 <= seconds <= policy.workflow_timeout_s:
        limit = format_duration(policy.workflow_timeout_s)
        raise InvalidSubmission(f"expires_in: between 1s and {limit} (MAILGATE_WORKFLOW_TIMEOUT)")
    choice = "expire" if on_expiry in (None, "") else on_expiry
    if choice not in ON_EXPIRY:
        raise InvalidSubmission(f"on_expiry: one of {', '.join(ON_EXPIRY)}")
    return Deadline(
        expires_in_ms=int(seconds * 1000),
        remind_after_ms=int(policy.remind_after_s * 1000),
        remind_every_ms=int(policy.remind_every_s * 1000),
        on_expiry=choice,
    )


#: More approvers than fit a reply token's recipient byte, or an inbox, is a mistake.
APPROVERS_MAX = 50


def check_approvers(email: object, approvers: object, policy: Policy) -> tuple[str, ...]:
    """``email`` (one approver) or ``approvers`` (a list), each allowed, without repeats."""
    if approvers is None:
        return (check_approver(email, policy),)
    if email is not None:
        raise InvalidSubmission("email: give email (one approver) or approvers (a list), not both")
    if not isinstance(approvers, list) or not approvers:
        raise InvalidSubmission("approvers: a non-empty list of addresses")
    if len(approvers) > APPROVERS_MAX:
        raise InvalidSubmission(f"approvers: at most {APPROVERS_MAX}")
    checked = [check_approver(a, policy, field="approvers") for a in approvers]
    return tuple(dict.fromkeys(checked))


def check_quorum(value: object, approvers: tuple[str, ...]) -> Quorum:
    try:
        quorum = Quorum.from_value(value)
    except ValueError:
        raise InvalidSubmission('policy: any, all, or {"min": N}') from None
    if quorum.kind == "min" and quorum.min > len(approvers):
        raise InvalidSubmission(f"policy: min {quorum.min} of {len(approvers)} approvers")
    return quorum


def check_escalation(
    escalate_to: object,
    escalate_after: object,
    approvers: tuple[str, ...],
    deadline: Deadline,
    policy: Policy,
) -> tuple[tuple[str, ...], int | None]:
    """Who a waiting round is also offered to, and when: ``escalate_after`` after it was sent
    (default: at the first reminder), always before the deadline."""
    if escalate_to in (None, []):
        return (), None
    if not isinstance(escalate_to, list):
        raise InvalidSubmission("escalate_to: a list of addresses")
    people = tuple(
        a
        for a in dict.fromkeys(check_approver(x, policy, field="escalate_to") for x in escalate_to)
        if a not in approvers
    )
    if escalate_after in (None, ""):
        if deadline.remind_after_ms <= 0:
            raise InvalidSubmission(
                "escalate_after: required when reminders are off (MAILGATE_REMIND_AFTER=0)"
            )
        after_ms = deadline.remind_after_ms
    else:
        try:
            after_ms = int(parse_duration(escalate_after) * 1000)
        except (ValueError, TypeError):
            raise InvalidSubmission("escalate_after: a duration like 90s, 15m, 24h or 7d") from None
    if not 0 < after_ms < deadline.expires_in_ms:
        raise InvalidSubmission("escalate_after: after 0 and before the deadline (expires_in)")
    return people, after_ms


def check_approver(value: object, policy: Policy, *, field: str = "email") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidSubmission(f"{field}: an approver address is required")
    try:
        address = validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidSubmission(f"{field}: {exc}") from None
    address = normalize_email(address)
    if policy.allowed_approvers and not _allowed(address, policy.allowed_approvers):
        raise InvalidSubmission(f"{field}: {address} is not in MAILGATE_ALLOWED_APPROVERS")
    return address


def _allowed(address: str, allowed: Sequence[str]) -> bool:
    domain = address.rpartition("@")[2]
    for entry in (e.strip().lower() for e in allowed):
        if entry.startswith("@") and domain == entry[1:]:
            return True
        if entry == address:
            return True
    return False
