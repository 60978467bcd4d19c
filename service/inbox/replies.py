"""Understanding a reply: the raw message in, who sent it and what they decided out.

Pure functions, no I/O. `parse` reads what the message says and never raises, whatever bytes a
stranger sends; `judge` applies the policy (robots never decide, only the approver decides).
The token in the recipient address is not looked at here: the SMTP handler verifies it from the
envelope before the message is parsed.

Headers are read from their raw form, so an encoded word cannot smuggle an address into
``From``; a From with more than one mailbox, or more than one From, has no sender. Bodies are
decoded leniently: a missing, wrong or unknown charset label falls back to UTF-8 and then
windows-1252, as mail clients do, and text that still does not decode decides nothing.
"""

from __future__ import annotations

import email
import email.errors
import email.utils
import re
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Literal

from service.inbox.quotes import html_to_text, new_text, unflow
from service.inbox.verdicts import Verdict, classify

TEXT_CHARS_READ = 100_000
HTML_CHARS_READ = 500_000
"""How much of a body is read. The answer sits above, between or just under the quoted lines of
a short request; reading a pasted 10 MB log or a 6 MB HTML body to the end costs seconds."""
PARSE_BYTES_MAX = 1024 * 1024
"""How much of the raw message the parser is given: the headers and the first text part come
first, attachments after them. The standard parser's time and memory grow with what it is given
(some 30 bytes of memory per byte for short lines), so a 10 MB reply is not read to its end."""

Decision = Literal["approve", "reject", "none"]
Why = Literal["approve", "reject", "unclear", "auto-reply", "wrong-sender"]


@dataclass(frozen=True)
class Reply:
    sender: str | None
    """Bare From address, ASCII letters lowercased; None if absent, ambiguous or malformed."""
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    auto: str | None
    """Why the message was sent by a machine (e.g. "Precedence: bulk"), or None for a person."""
    text: str
    """The sender's new text only: quoted history and signature removed."""
    verdict: Verdict
    reason: str | None
    """For a rejection, what the person wrote after or around their "no"; otherwise None."""


@dataclass(frozen=True)
class Judgement:
    decision: Decision
    why: Why
    reason: str | None


_LATIN_LABELS = frozenset(
    {
        "us-ascii",
        "ascii",
        "ansi_x3.4-1968",
        "iso-8859-1",
        "iso8859-1",
        "iso_8859-1",
        "latin1",
        "latin-1",
        "l1",
        "cp819",
        "windows-1252",
        "cp1252",
        "x-cp1252",
    }
)
"""Labels clients put on text that is as often UTF-8 or windows-1252 as what the label says."""

_AUTOMATIC_PRECEDENCE = frozenset({"bulk", "junk", "auto_reply", "list"})
_AUTOMATIC_CONTENT = frozenset(
    {"multipart/report", "message/delivery-status", "message/disposition-notification"}
)
_ROBOT_MAILBOXES = frozenset({"mailer-daemon", "postmaster"})
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_ADDRESS = re.compile(rf"^[^@\s<>()\[\]\\,;:\"]+@{_LABEL}(?:\.{_LABEL})+$")
"""One mailbox: no spaces, brackets or quotes in the local part, a dotted host name after it."""
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def parse(raw: bytes, *, envelope_sender: str | None = None) -> Reply:
    """Read a raw message as the listener received it. Never raises."""
    try:
        return _parse(raw[:PARSE_BYTES_MAX], envelope_sender)
    except Exception:  # the stdlib parser has crashed on crafted input before; refuse, don't fail
        return Reply(None, None, None, (), None, "", "unclear", None)


def judge(reply: Reply, *, approver: str) -> Judgement:
    """What the waiting round should do with this reply from its approver's point of view."""
    if reply.auto is not None:
        return Judgement("none", "auto-reply", None)
    if reply.sender is None or reply.sender != _bare_address(approver):
        return Judgement("none", "wrong-sender", None)
    if reply.verdict == "approve":
        return Judgement("approve", "approve", None)
    if reply.verdict == "reject":
        return Judgement("reject", "reject", reply.reason)
    return Judgement("none", "unclear", None)


def _parse(raw: bytes, envelope_sender: str | None) -> Reply:
    message = email.message_from_bytes(raw, policy=policy.default)
    headers = _raw_headers(message)
    sender, names = _sender(headers.get("from", []))
    text = _new_text(message, names)
    verdict, reason = classify(text)
    return Reply(
        sender=sender,
        message_id=_first_id(headers.get("message-id", [])),
        in_reply_to=_first_id(headers.get("in-reply-to", [])),
        references=tuple(_MESSAGE_ID.findall(" ".join(headers.get("references", [])))),
        auto=_automatic(headers, message, sender, envelope_sender),
        text=text,
        verdict=verdict,
        reason=reason if verdict == "reject" else None,
    )


# --- headers -------------------------------------------------------------------------------------


def _raw_headers(message: EmailMessage) -> dict[str, list[str]]:
    """Header values as sent (unfolded, undecoded), by lowercased name."""
    headers: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        text = _FOLD.sub("", str(value)).strip()
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        headers.setdefault(name.strip().lower(), []).append(text)
    return headers


def _sender(values: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """The single From mailbox, and the names its owner may sign with."""
    if len(values) != 1:
        return None, ()
    mailboxes = email.utils.getaddresses(values)
    if len(mailboxes) != 1:
        return None, ()
    display, address = mailboxes[0]
    if not _ADDRESS.match(address):
        return None, ()
    return address.translate(_ASCII_LOWER), _signing_names(display, address)


def _signing_names(display: str, address: str) -> tuple[str, ...]:
    try:
        name = str(make_header(decode_header(display))).strip()
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        name = display.strip()
    local = re.split(r"[._+-]", address.split("@")[0])[0]
    candidates = [name, name.split(" ")[0] if name else "", local if local.isalpha() else ""]
    return tuple(c for c in candidates if len(c) > 1)


def _bare_address(approver: str) -> str:
    _, address = email.utils.parseaddr(approver)
    return (address or approver).strip().translate(_ASCII_LOWER)


def _first_id(values: list[str]) -> str | None:
    if not values:
        return None
    found = _MESSAGE_ID.search(values[0])
    return found.group() if found else (values[0] or None)


def _automatic(
    headers: dict[str, list[str]],
    message: EmailMessage,
    sender: str | None,
    envelope_sender: str | None,
) -> str | None:
    """Why this message was sent by a machine rather than typed by a person, or None."""
    if envelope_sender is not None and envelope_sender.strip() in {"", "<>"}:
        return "empty sender"
    for value in headers.get("auto-submitted", []):
        kind = value.split(";")[0].strip().lower()
        if kind != "no":
            return f"Auto-Submitted: {kind}"
    for name, label in (("x-autoreply", "X-Autoreply"), ("x-autorespond", "X-Autorespond")):
        if any(v.strip().lower() not in {"no", "false", "0"} for v in headers.get(name, [])):
            return label
    for value in headers.get("precedence", []):
        if value.strip().lower() in _AUTOMATIC_PRECEDENCE:
            return f"Precedence: {value.strip().lower()}"
    for name, label in (
        ("list-id", "List-Id"),
        ("list-unsubscribe", "List-Unsubscribe"),
        ("x-failed-recipients", "X-Failed-Recipients"),
    ):
        if name in headers:
            return label
    for part in message.walk():
        if (kind := part.get_content_type()) in _AUTOMATIC_CONTENT:
            return kind
    mailboxes = [sender, _bare_address(envelope_sender or "")]
    if any(m and m.split("@")[0] in _ROBOT_MAILBOXES for m in mailboxes):
        return "MAILER-DAEMON"
    return None


# --- body ----------------------------------------------------------------------------------------


def _new_text(message: EmailMessage, names: tuple[str, ...]) -> str:
    """The new text of the plain body, or of the HTML body when the plain one has none."""
    for subtype in ("plain", "html"):
        part = message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_type() != f"text/{subtype}":
            continue
        if found := new_text(_body_text(part), names=names):
            return found
    return ""


def _body_text(part: EmailMessage) -> str:
    text = _decoded(part)
    if part.get_content_type() == "text/html":
        return html_to_text(text[:HTML_CHARS_READ])
    text = text[:TEXT_CHARS_READ]
    if str(part.get_param("format", "")).lower() == "flowed":
        return unflow(text, delsp=str(part.get_param("delsp", "")).lower() == "yes")
    return text


def _decoded(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    label = str(part.get_content_charset() or "us-ascii").strip().lower()
    codecs = ["utf-8", "windows-1252"] if label in _LATIN_LABELS else [label, "utf-8"]
    for codec in codecs:
        try:
            return payload.decode(codec)
        except (LookupError, UnicodeError, ValueError):
            continue
    return payload.decode("windows-1252", errors="replace")
