"""Starting a request: validation, one workflow per (URL, approver), and the dispatch to workers.

The gateway never runs a workflow itself: the ledger creates the root promise by ``rpc`` to the
worker group, so the same code works embedded and against a remote engine. Submitting a pair
that is still known returns the existing request; ``repeat`` starts the next generation only
once the previous one has finished.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import httpx
from email_validator import EmailNotValidError, validate_email

from service.domain import (
    ON_EXPIRY,
    Deadline,
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
) -> Submitted:
    page = check_url(url, "url", policy)
    approver = check_approver(email, policy)
    callback = check_url(callback_url, "callback_url", policy) if callback_url else None
    request = Request(
        url=page,
        approver=approver,
        callback_url=callback,
        submitted_at=now_ms,
        submitted_by=submitted_by,
        client=client,
        nonce=secrets.token_hex(8),
        deadline=check_deadline(expires_in, on_expiry, policy),
    )

    found = await ledger.latest(request.pair)
    if found is not None:
        if found.state not in FINISHED_STATES or not repeat:
            return Submitted(found.request_id, created=False)
        request_id = workflow_id(page, approver, generation_of(found.request_id) + 1)
    else:
        request_id = workflow_id(page, approver)

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


def check_approver(value: object, policy: Policy) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidSubmission("email: an approver address is required")
    try:
        address = validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidSubmission(f"email: {exc}") from None
    address = normalize_email(address)
    if policy.allowed_approvers and not _allowed(address, policy.allowed_approvers):
        raise InvalidSubmission(f"email: {address} is not in MAILGATE_ALLOWED_APPROVERS")
    return address


def _allowed(address: str, allowed: Sequence[str]) -> bool:
    domain = address.rpartition("@")[2]
    for entry in (e.strip().lower() for e in allowed):
        if entry.startswith("@") and domain == entry[1:]:
            return True
        if entry == address:
            return True
    return False
