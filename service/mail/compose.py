"""The approval request as an email: one round of one request, in text and HTML.

Pure: the same ask, settings and time give the same message, except the reply token's issue
time. Every header that identifies the round is derived from its promise id, so a resend after
a crash (sent, but not yet checkpointed) carries the same Message-ID and mail clients show a
duplicate rather than a second request. Re-asks point ``In-Reply-To``/``References`` at the
first round's Message-ID, so the rounds of one request form one conversation.

The HTML part has its CSS inlined and loads nothing from outside: mail clients strip
``<style>`` blocks and block remote content.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

import css_inline
import jinja2

from service import templating
from service.domain import Ask
from service.reply_tokens import mint_reply_token


def compose_request(
    ask: Ask, *, sender: str, reply_domain: str | None, secrets: Sequence[str], now: int
) -> EmailMessage:
    """Build the round's request; ``now`` is epoch milliseconds, as are ``ask``'s times."""
    domain = _domain_of(sender)
    subject = f"[Mailgate] Approve summary of {ask.url}"
    if ask.round > 1:
        subject += f" (round {ask.round})"
    context = {
        "subject": subject,
        "url": ask.url,
        "round": ask.round,
        "summary": ask.summary.strip(),
        "paragraphs": _paragraphs(ask.summary),
        "previous_reason": ask.previous_reason if ask.round > 1 else None,
        "approve_url": f"{ask.decide_url}?verdict=approve",
        "reject_url": f"{ask.decide_url}?verdict=reject",
        "expires": _when(ask.expires_at),
        "reply_enabled": reply_domain is not None,
        "approver": ask.approver,
    }

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ask.approver
    message["Date"] = format_datetime(datetime.fromtimestamp(now / 1000, UTC))
    message["Message-ID"] = message_id_for(ask.promise_id, domain)
    if ask.round > 1:
        first = message_id_for(ask.first_promise_id, domain)
        message["In-Reply-To"] = first
        message["References"] = first
    if reply_domain is not None:
        token = mint_reply_token(ask.promise_id, secrets=secrets, now=now)
        message["Reply-To"] = f"reply+{token}@{reply_domain}"
    message["Auto-Submitted"] = "auto-generated"
    # Asks Exchange/Outlook not to answer with out-of-office notes, which would reach the inbox.
    message["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    message.set_content(_render("request.txt.j2", context))
    message.add_alternative(_inline(_render("request.html.j2", context)), subtype="html")
    return message


def message_id_for(promise_id: str, domain: str) -> str:
    """Hashed, because a promise id's ``:`` is not allowed in a Message-ID."""
    digest = hashlib.blake2b(promise_id.encode(), digest_size=16).hexdigest()
    return f"<mailgate.{digest}@{domain}>"


def compose_notice(
    to: str,
    subject: str,
    text: str,
    *,
    sender: str,
    in_reply_to: str | None,
    now: int | None = None,
) -> EmailMessage:
    """A short plain note answering a reply (help, "already decided").

    ``Auto-Submitted: auto-replied`` tells other robots not to answer it, which is what keeps
    Mailgate out of mail loops with auto-responders.
    """
    sent = datetime.now(UTC) if now is None else datetime.fromtimestamp(now / 1000, UTC)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = make_msgid("mailgate", domain=_domain_of(sender))
    if in_reply_to is not None:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    message.set_content(text)
    return message


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=templating.loader("email"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    # At-rules (the narrow-screen padding) cannot be inlined; they stay in a <style> block for
    # the clients that honour it.
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def _render(name: str, context: dict[str, object]) -> str:
    return _templates().get_template(name).render(context)


def _inline(html: str) -> str:
    return _inliner().inline(html)


def _paragraphs(text: str) -> list[list[str]]:
    """Blank lines separate paragraphs; single newlines inside one stay line breaks."""
    blocks = re.split(r"\n\s*\n", text.strip())
    return [[line.strip() for line in block.splitlines()] for block in blocks if block.strip()]


def _when(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M} UTC"


def _domain_of(sender: str) -> str:
    local, at, domain = parseaddr(sender)[1].rpartition("@")
    if not (local and at and domain):
        msg = f"sender {sender!r} has no domain; write it like 'Mailgate <mailgate@example.com>'"
        raise ValueError(msg)
    return domain
