"""Every email Mailgate sends, one function per kind: the request (first round and re-asks) and
the short notice answering a reply. ``service.mail.send.Mailer`` is the one way they leave. A new
kind is one more function here that starts from ``_message`` (the headers every kind shares) and
adds its body; its sender hands the result to ``Mailer.send``.

Pure: the same ask, settings and time give the same message, except the reply token's issue
time. Every header that identifies the round is derived from its promise id, so a resend after
a crash (sent, but not yet checkpointed) carries the same Message-ID and mail clients show a
duplicate rather than a second request. Re-asks point ``In-Reply-To``/``References`` at the
first round's Message-ID, so the rounds of one request form one conversation.

The HTML part has its CSS inlined and loads nothing from outside: mail clients strip
``<style>`` blocks and block remote content. Bodies are quoted-printable, so the message is 7-bit
and no relay re-encodes (and so un-signs) it. Every kind carries ``X-Mailgate-Request`` with the
request id, for mail filters.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from urllib.parse import quote, urlsplit

import css_inline
import jinja2

from service import templating
from service.domain import Ask
from service.reply_tokens import mint_reply_token

SUBJECT_MAX_CHARS = 69
""""Subject: " and 69 ASCII characters make a 78-character line, which is never folded. A longer
subject may be folded before its first word ("Subject:" alone on its line), and MailHog and some
other clients then show no subject at all. The full URL is in the body."""
_SUBJECT_PREFIX = "[Mailgate] Approve summary of "
_REMINDER_PREFIX = "[Mailgate] Reminder: approve "
_CLIPPED = "..."
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def compose_request(
    ask: Ask, *, sender: str, reply_domain: str | None, secrets: Sequence[str], now: int
) -> EmailMessage:
    """Build the round's request, or its reminder (``ask.reminder``): the same links and reply
    address in the same thread, saying when the request expires. ``now`` is epoch milliseconds,
    as are ``ask``'s times."""
    domain = domain_of(sender)
    subject = request_subject(ask.url, ask.round, reminder=ask.reminder > 0)
    context = {
        "subject": subject,
        "url": ask.url,
        "round": ask.round,
        "summary": ask.summary.strip(),
        "paragraphs": _paragraphs(ask.summary),
        "previous_reason": ask.previous_reason if ask.round > 1 else None,
        "approve_url": f"{ask.decide_url}?verdict=approve",
        "reject_url": f"{ask.decide_url}?verdict=reject",
        "expires": _when(ask.expires_at) if ask.expires_at is not None else None,
        "reply_enabled": reply_domain is not None,
        "approver": ask.approver,
        "reminder": ask.reminder,
    }
    first = message_id_for(ask.first_promise_id, domain) if ask.round > 1 else None
    own = message_id_for(ask.promise_id, domain)
    if ask.reminder:
        first, own = own, message_id_for(f"{ask.promise_id}#reminder-{ask.reminder}", domain)
    message = _message(
        to=ask.approver,
        subject=subject,
        sender=sender,
        now=now,
        message_id=own,
        request_id=ask.request_id,
        in_reply_to=first,
        automatic="auto-generated",
    )
    if reply_domain is not None:
        issued = ask.issued_at if ask.issued_at is not None else now
        token = mint_reply_token(ask.promise_id, secrets=secrets, now=issued)
        message["Reply-To"] = f"reply+{token}@{reply_domain}"
    message.set_content(_render("request.txt.j2", context), cte="quoted-printable")
    html = _inline(_render("request.html.j2", context))
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message


def compose_notice(
    to: str,
    subject: str,
    text: str,
    *,
    sender: str,
    request_id: str,
    in_reply_to: str | None,
    now: int,
    message_id: str | None = None,
) -> EmailMessage:
    """A short plain note: answering a reply (help, "already decided"), or telling the approver
    a round ended without them (expired, cancelled); the latter pass a ``message_id`` derived
    from the round, so a resend is the same message.

    ``Auto-Submitted: auto-replied`` tells other robots not to answer it, which is what keeps
    Mailgate out of mail loops with auto-responders.
    """
    message = _message(
        to=to,
        subject=subject,
        sender=sender,
        now=now,
        message_id=message_id or make_msgid("mailgate", domain=domain_of(sender)),
        request_id=request_id,
        in_reply_to=in_reply_to,
        automatic="auto-replied",
    )
    message.set_content(text, cte="quoted-printable")
    return message


def request_subject(url: str, round_: int, *, reminder: bool = False) -> str:
    """``[Mailgate] Approve summary of <host/path> (round N)``, at most SUBJECT_MAX_CHARS;
    a reminder says so first."""
    prefix = _REMINDER_PREFIX if reminder else _SUBJECT_PREFIX
    return page_subject(prefix, url, f" (round {round_})" if round_ > 1 else "")


def page_subject(prefix: str, url: str, suffix: str = "") -> str:
    """``<prefix><host/path><suffix>``, the page clipped to keep within SUBJECT_MAX_CHARS."""
    budget = SUBJECT_MAX_CHARS - len(prefix) - len(suffix)
    return f"{prefix}{_page_in(url, budget)}{suffix}"


def message_id_for(promise_id: str, domain: str) -> str:
    """Hashed, because a promise id's ``:`` is not allowed in a Message-ID."""
    digest = hashlib.blake2b(promise_id.encode(), digest_size=16).hexdigest()
    return f"<mailgate.{digest}@{domain}>"


def _message(
    *,
    to: str,
    subject: str,
    sender: str,
    now: int,
    message_id: str,
    request_id: str,
    in_reply_to: str | None,
    automatic: str,
) -> EmailMessage:
    """The headers every kind shares; the caller adds the body."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(datetime.fromtimestamp(now / 1000, UTC))
    message["Message-ID"] = message_id
    if in_reply_to is not None:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message["Auto-Submitted"] = automatic
    # Asks Exchange/Outlook not to answer with out-of-office notes, which would reach the inbox.
    message["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    message["X-Mailgate-Request"] = request_id
    return message


def _page_in(url: str, budget: int) -> str:
    """The page as a subject can show it: host and path, the middle of the path left out if
    need be, ASCII only (an encoded word would make the subject long again)."""
    parts = urlsplit(url)
    host = _ascii_host(parts.netloc.rpartition("@")[2])
    page = host + quote(parts.path.rstrip("/"), safe=_PATH_SAFE)
    if len(page) <= budget:
        return page
    shortened = f"{host}/{_CLIPPED}/{page.rpartition('/')[2]}"
    if len(shortened) <= budget:
        return shortened
    return page[: budget - len(_CLIPPED)] + _CLIPPED


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


def _ascii_host(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return quote(host, safe=":[]")


def _paragraphs(text: str) -> list[list[str]]:
    """Blank lines separate paragraphs; single newlines inside one stay line breaks."""
    blocks = re.split(r"\n\s*\n", text.strip())
    return [[line.strip() for line in block.splitlines()] for block in blocks if block.strip()]


def _when(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M} UTC"


def domain_of(sender: str) -> str:
    local, at, domain = parseaddr(sender)[1].rpartition("@")
    if not (local and at and domain):
        msg = f"sender {sender!r} has no domain; write it like 'Mailgate <mailgate@example.com>'"
        raise ValueError(msg)
    return domain
