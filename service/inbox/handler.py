"""The SMTP hooks of the reply listener: turn a delivered reply into a decision, or refuse it.

``handle_RCPT`` accepts only ``reply+<token>@<reply domain>`` with a token that verifies, so the
listener is never a relay. ``handle_DATA`` answers ``250`` only after the outcome is durable
(the round's promise resolved, or the reply recorded as seen), and ``451`` on any internal
failure so the sending MTA retries: an acknowledged reply is never lost.

"At most once" rules (a duplicate delivery decides once; one help email per round; one
"already decided" note per round) are kept as marker promises in the engine: whoever settles a
marker with its own nonce first does the work, so they survive restarts and hold across
several listeners.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets as pysecrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from resonate.resonate import Resonate
from resonate.types import Value

from service import decisions, requests
from service.errors import BadToken
from service.inbox import dkim_check
from service.inbox.replies import Judgement, Reply, judge, parse
from service.mail.compose import compose_notice
from service.metrics import Metrics
from service.reply_tokens import verify_reply_token

logger = logging.getLogger(__name__)

HELP_TEXT = (
    "Mailgate could not tell whether you approve. Reply YES to approve or NO to reject; "
    "add a reason after NO."
)


@dataclass(frozen=True)
class Marker:
    """One "at most once" fact (a delivery seen, a help note sent), kept as a promise whose id
    is derived from its kind and key; the engine's retention forgets it with the request."""

    kind: str
    key: str

    @property
    def promise_id(self) -> str:
        return f"mgmark-{self.kind}-{_digest(self.key.encode())}"


class ReplyHandler:
    def __init__(
        self,
        *,
        resonate: Resonate,
        reply_domain: str,
        secrets: Sequence[str],
        sender: str,
        send: Callable[[EmailMessage], Awaitable[object]],
        clock: Callable[[], int],
        metrics: Metrics,
        marker_ttl_ms: int,
        require_dkim: bool = False,
        dns_txt: dkim_check.TxtLookup | None = None,
    ) -> None:
        self.resonate = resonate
        self.reply_domain = reply_domain.lower()
        self.secrets = secrets
        self.sender = sender
        self.send = send
        self.clock = clock
        self.metrics = metrics
        self.marker_ttl_ms = marker_ttl_ms
        self.require_dkim = require_dkim
        self.dns_txt = dns_txt
        self.in_flight = 0
        self._delivering: set[str] = set()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.promise_for(address) is None:
            logger.info(
                "refused recipient %s",
                address,
                extra={"event": "reply_refused", "reason": "bad recipient"},
            )
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        self.in_flight += 1
        try:
            answers = [await self._deliver(data, envelope, rcpt) for rcpt in envelope.rcpt_tos]
        except Exception:
            logger.exception("reply processing failed; asking the sender to retry")
            return "451 4.3.0 Temporary failure, please try again later"
        finally:
            self.in_flight -= 1
        refused = [a for a in answers if not a.startswith("250")]
        return refused[0] if refused and len(refused) == len(answers) else "250 OK"

    def promise_for(self, address: str) -> str | None:
        local, _, domain = address.strip().strip("<>").rpartition("@")
        local = local.lower()
        if domain.lower() != self.reply_domain or not local.startswith("reply+"):
            return None
        try:
            return verify_reply_token(local.removeprefix("reply+"), secrets=self.secrets).promise_id
        except BadToken:
            return None

    async def _deliver(self, data: bytes, envelope: Envelope, rcpt: str) -> str:
        promise_id = self.promise_for(rcpt)
        if promise_id is None:
            return "550 5.1.1 No such recipient here"
        reply = await asyncio.to_thread(parse, data, envelope_sender=envelope.mail_from or None)
        request_id = promise_id.partition(":")[0]
        approver = await requests.approver_of(self.resonate, request_id)
        if approver is None:
            self._event(reply, promise_id, "unknown request")
            return "550 5.1.1 This request no longer exists"
        verdict = judge(reply, approver=approver)
        if verdict.why == "auto-reply":
            self._event(reply, promise_id, f"ignored: automatic ({reply.auto})")
            return "250 OK"
        if verdict.why == "wrong-sender":
            self._event(reply, promise_id, "refused: sender is not the approver")
            return "550 5.7.1 Only the approver can answer this request"
        if self.require_dkim:
            problem = await dkim_check.verify(data, reply.sender or "", self.dns_txt)
            if problem is not None:
                self._event(reply, promise_id, f"refused: {problem}")
                return "550 5.7.20 DKIM check failed: " + problem
        delivery = Marker("msg", f"{promise_id}|{reply.message_id or _digest(data)}")
        if delivery.promise_id in self._delivering or await self._seen(delivery):
            self._event(reply, promise_id, "ignored: duplicate delivery")
            return "250 OK"
        # Marked as seen only after deciding, so a crash in between makes the sender retry
        # rather than lose the reply; copies arriving meanwhile are caught in memory.
        self._delivering.add(delivery.promise_id)
        try:
            answer = await self._decide(reply, verdict, promise_id, approver)
            await self._first(delivery)
        finally:
            self._delivering.discard(delivery.promise_id)
        return answer

    async def _decide(
        self, reply: Reply, verdict: Judgement, promise_id: str, approver: str
    ) -> str:
        if verdict.decision == "none":
            if await self._first(Marker("help", promise_id)):
                await self._notice(reply, promise_id, approver, "Reply YES or NO", HELP_TEXT)
            self._event(reply, promise_id, "unclear: help sent once per round")
            return "250 OK"
        try:
            outcome = await decisions.decide(
                self.resonate,
                promise_id=promise_id,
                verdict=verdict.decision,
                reason=verdict.reason,
                by=approver,
                via="reply",
                now_ms=self.clock(),
                approver=approver,
            )
        except BadToken as exc:
            self._event(reply, promise_id, f"refused: {exc}")
            return "550 5.1.1 This round no longer exists"
        if isinstance(outcome, decisions.AlreadyDecided):
            if await self._first(Marker("late", promise_id)):
                await self._notice(
                    reply, promise_id, approver, "Already decided", _already(outcome)
                )
            self._event(reply, promise_id, "ignored: already decided")
            return "250 OK"
        self.metrics.decisions.labels("reply", verdict.decision).inc()
        self._event(reply, promise_id, f"decided: {verdict.decision}")
        return "250 OK"

    async def _seen(self, marker: Marker) -> bool:
        record = await requests.get_record(self.resonate, marker.promise_id)
        return record is not None and record.state == "resolved"

    async def _first(self, marker: Marker) -> bool:
        """True for exactly one caller per marker, across restarts and listeners."""
        marker_id = marker.promise_id
        now = self.clock()
        await self.resonate.promises.create(
            marker_id, now + self.marker_ttl_ms, Value(data=None), {"mailgate:marker": marker.kind}
        )
        nonce = pysecrets.token_hex(8)
        settled = await self.resonate.promises.resolve(marker_id, Value(data={"nonce": nonce}))
        value: Any = settled.value.data
        return isinstance(value, dict) and value.get("nonce") == nonce

    async def _notice(
        self, reply: Reply, promise_id: str, approver: str, subject: str, text: str
    ) -> None:
        """Best effort: a help note that cannot be sent must not bounce the reply itself."""
        message = compose_notice(
            approver,
            f"[Mailgate] {subject}",
            text,
            sender=self.sender,
            request_id=promise_id.partition(":")[0],
            in_reply_to=reply.message_id,
            now=self.clock(),
        )
        try:
            await self.send(message)
        except Exception as exc:  # the decision (or non-decision) stands either way
            logger.warning("could not send %r to %s: %s", subject, approver, exc)

    def _event(self, reply: Reply, promise_id: str, outcome: str) -> None:
        self.metrics.replies.labels(outcome.partition(":")[0]).inc()
        logger.info(
            "reply %s from %s: %s",
            reply.message_id,
            reply.sender,
            outcome,
            extra={
                "event": "reply",
                "outcome": outcome,
                "from": reply.sender,
                "message_id": reply.message_id,
                "round": promise_id,
                "at": self.clock(),
            },
        )


def _already(outcome: decisions.AlreadyDecided) -> str:
    decision = outcome.decision
    if decision is None:
        return "This request is no longer waiting for a decision; your reply changed nothing."
    word = "approved" if decision.verdict == "approve" else "rejected"
    return (
        f"This round was already {word} by {decision.by} via {decision.via}; "
        "your reply changed nothing."
    )


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()
