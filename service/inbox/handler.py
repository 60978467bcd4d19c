"""The SMTP hooks of the reply listener: turn a delivered reply into a decision, or refuse it.

``handle_RCPT`` accepts only ``reply+<token>@<reply domain>`` with a token that verifies, so the
listener is never a relay. ``handle_DATA`` answers ``250`` only after the outcome is durable
(the round settled, or the reply recorded), and ``451`` on any internal failure so the sending
MTA retries: an acknowledged reply is never lost. Who may decide, and what is recorded, is
``service.decisions``' business; this module only reads the mail and picks the answer line
from ``ANSWERS``.

A second delivery of a reply that decided its round is recognised by its Message-ID in the
stored decision and answered ``250`` without a word to the approver; the help note for an
unclear reply and the "already decided" note are each sent once per round (ledger markers).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, Envelope, Session

from service import decisions
from service.decisions import Actor, Decisions
from service.errors import BadToken
from service.inbox import dkim_check
from service.inbox.replies import Reply, judge, parse
from service.ledger import Round
from service.mail.compose import compose_notice
from service.metrics import Metrics
from service.reply_tokens import verify_reply_token

logger = logging.getLogger(__name__)

#: Every line the listener answers with, by what happened.
ANSWERS = {
    "ok": "250 OK",
    "no recipient": "550 5.1.1 No such recipient here",
    "unknown request": "550 5.1.1 This request no longer exists",
    "not the approver": "550 5.7.1 Only the approver can answer this request",
    "dkim": "550 5.7.20 DKIM check failed: {problem}",
    "retry": "451 4.3.0 Temporary failure, please try again later",
}

HELP_TEXT = (
    "Mailgate could not tell whether you approve. Reply YES to approve or NO to reject; "
    "add a reason after NO."
)


class ReplyHandler:
    def __init__(
        self,
        *,
        decisions: Decisions,
        reply_domain: str,
        secrets: Sequence[str],
        sender: str,
        send: Callable[[EmailMessage], Awaitable[object]],
        clock: Callable[[], int],
        metrics: Metrics,
        require_dkim: bool = False,
        dns_txt: dkim_check.TxtLookup | None = None,
    ) -> None:
        self.decisions = decisions
        self.reply_domain = reply_domain.lower()
        self.secrets = secrets
        self.sender = sender
        self.send = send
        self.clock = clock
        self.metrics = metrics
        self.require_dkim = require_dkim
        self.dns_txt = dns_txt
        self.in_flight = 0

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.round_for(address) is None:
            logger.info(
                "refused recipient %s",
                address,
                extra={"event": "reply_refused", "reason": "bad recipient"},
            )
            return ANSWERS["no recipient"]
        envelope.rcpt_tos.append(address)
        return ANSWERS["ok"]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        self.in_flight += 1
        try:
            answers = [await self._deliver(data, envelope, rcpt) for rcpt in envelope.rcpt_tos]
        except Exception:
            logger.exception("reply processing failed; asking the sender to retry")
            return ANSWERS["retry"]
        finally:
            self.in_flight -= 1
        refused = [a for a in answers if not a.startswith("250")]
        return refused[0] if refused and len(refused) == len(answers) else ANSWERS["ok"]

    def round_for(self, address: str) -> str | None:
        local, _, domain = address.strip().strip("<>").rpartition("@")
        local = local.lower()
        if domain.lower() != self.reply_domain or not local.startswith("reply+"):
            return None
        try:
            return verify_reply_token(local.removeprefix("reply+"), secrets=self.secrets).promise_id
        except BadToken:
            return None

    async def _deliver(self, data: bytes, envelope: Envelope, rcpt: str) -> str:
        round_id = self.round_for(rcpt)
        if round_id is None:
            return ANSWERS["no recipient"]
        reply = await asyncio.to_thread(parse, data, envelope_sender=envelope.mail_from or None)
        try:
            found = await self.decisions.find(round_id)
        except BadToken:
            self._event(reply, round_id, "refused", "unknown request")
            return ANSWERS["unknown request"]
        approver = found.record.request.approver
        judgement = judge(reply, approver=approver)
        actor = Actor(approver, "reply", _evidence(reply, envelope, data))
        if judgement.why == "auto-reply":
            self._event(reply, round_id, "ignored", f"automatic ({reply.auto})")
            return ANSWERS["ok"]
        if judgement.why == "wrong-sender":
            await self.decisions.refuse(found, "sender is not the approver", actor)
            self._event(reply, round_id, "refused", "sender is not the approver")
            return ANSWERS["not the approver"]
        if self.require_dkim:
            problem = await dkim_check.verify(data, reply.sender or "", self.dns_txt)
            actor.evidence["dkim"] = problem or "pass"
            if problem is not None:
                await self.decisions.refuse(found, f"DKIM: {problem}", actor)
                self._event(reply, round_id, "refused", problem)
                return ANSWERS["dkim"].format(problem=problem)
        if judgement.decision == "none":
            await self._unclear(found, reply, actor)
            return ANSWERS["ok"]
        outcome = await self.decisions.decide(
            found,
            verdict=judgement.decision,
            reason=judgement.reason,
            actor=actor,
            approver=approver,
        )
        if isinstance(outcome, decisions.Duplicate):
            self._event(reply, round_id, "ignored", "duplicate delivery")
        elif isinstance(outcome, decisions.AlreadyDecided):
            why = decisions.late_why(outcome.decision)
            if await self.decisions.ledger.claim_once(found.record.request_id, f"late:{round_id}"):
                await self._notice(found, reply, LATE_SUBJECTS[why], _already(outcome))
            self._event(reply, round_id, "ignored", why)
        else:
            self._event(reply, round_id, "decided", judgement.decision)
        return ANSWERS["ok"]

    async def _unclear(self, found: Round, reply: Reply, actor: Actor) -> None:
        """Recorded once per message; the approver is told how to answer once per round."""
        request_id = found.record.request_id
        await self.decisions.ledger.append(
            request_id,
            "reply_unclear",
            {"round_id": found.round_id, "text": reply.text[:500], **_said(actor)},
            key=f"unclear:{actor.channel_id}",
            chain=found.record.chain,
        )
        if found.pending and await self.decisions.ledger.claim_once(
            request_id, f"help:{found.round_id}"
        ):
            await self._notice(found, reply, "Reply YES or NO", HELP_TEXT)
        self._event(reply, found.round_id, "unclear", "help sent once per round")

    async def _notice(self, found: Round, reply: Reply, subject: str, text: str) -> None:
        """Best effort: a help note that cannot be sent must not bounce the reply itself."""
        approver = found.record.request.approver
        message = compose_notice(
            approver,
            f"[Mailgate] {subject}",
            text,
            sender=self.sender,
            request_id=found.record.request_id,
            in_reply_to=reply.message_id,
            now=self.clock(),
        )
        try:
            await self.send(message)
        except Exception as exc:  # the decision (or non-decision) stands either way
            logger.warning("could not send %r to %s: %s", subject, approver, exc)

    def _event(self, reply: Reply, round_id: str, outcome: str, detail: str) -> None:
        self.metrics.replies.labels(outcome).inc()
        logger.info(
            "reply %s from %s: %s: %s",
            reply.message_id,
            reply.sender,
            outcome,
            detail,
            extra={
                "event": "reply",
                "outcome": f"{outcome}: {detail}",
                "from": reply.sender,
                "message_id": reply.message_id,
                "round": round_id,
                "at": self.clock(),
            },
        )


def _evidence(reply: Reply, envelope: Envelope, data: bytes) -> dict[str, str]:
    """What the mail shows of its sender; a reply without Message-ID is known by its bytes."""
    message_id = reply.message_id or "sha256:" + hashlib.sha256(data).hexdigest()[:32]
    return {
        "envelope_sender": envelope.mail_from or "",
        "from": reply.sender or "",
        "message_id": message_id,
        "dkim": "not checked",
    }


def _said(actor: Actor) -> dict[str, object]:
    return {"by": actor.by, "via": actor.via, "evidence": actor.evidence}


LATE_SUBJECTS = {
    "expired": "Expired",
    "cancelled": "Cancelled",
    "already decided": "Already decided",
}


def _already(outcome: decisions.AlreadyDecided) -> str:
    decision = outcome.decision
    if decision is None:
        return "This request is no longer waiting for a decision; your reply changed nothing."
    if decision.via == "expiry":
        return (
            "This request expired: nobody decided it before its deadline, so your reply came "
            "too late and changed nothing."
        )
    if decision.verdict == "cancel":
        return f"This request was cancelled by {decision.by}; your reply changed nothing."
    word = "approved" if decision.verdict == "approve" else "rejected"
    return (
        f"This round was already {word} by {decision.by} via {decision.via}; "
        "your reply changed nothing."
    )
