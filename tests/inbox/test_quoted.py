"""Quoted history from any client never reaches the verdict or the reason.

``quoted/`` holds one reply body per file (``.txt`` for a plain-text reply, ``.html`` for an
HTML-only one) and, beside it, ``.expected``: exactly the text the approver typed. The bodies
were written for this project after the formats real clients produce, in English, German,
French, Spanish, Dutch, Portuguese, Swedish, Ukrainian, Russian, Polish, Italian, Japanese and
Chinese: Outlook's header blocks with and without a separator line, Gmail (web and app), Google
Inbox, Apple Mail and Outlook mobile attributions, attributions wrapped over two or three lines,
"Forwarded message" and "Original Message" blocks, and HTML with ``blockquote``, ``gmail_quote``,
``divRplyFwdMsg`` and ``moz-cite-prefix``. Each quote holds Mailgate's own "Reply YES … NO" line
and both decision links, so a leak shows.

To add a case, drop in the body and its ``.expected`` file; the test picks both up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.inbox.replies import parse

QUOTED = Path(__file__).resolve().parent / "quoted"
BODIES = sorted(p for p in QUOTED.iterdir() if p.suffix in {".txt", ".html"})
SENDER = "Alice Martin <alice@example.com>"
MAILGATE_LINES = ("Reply YES to approve or NO to reject", "verdict=approve", "verdict=reject")


def as_reply(body: Path) -> bytes:
    subtype = "html" if body.suffix == ".html" else "plain"
    headers = (
        f"From: {SENDER}\r\n"
        "To: reply+r1k3j5h7g9f2d4s6a8@mailgate.example.com\r\n"
        "Subject: Re: [Mailgate] Approve summary of example.com/pricing\r\n"
        "Message-ID: <quoted-fixture@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return headers.encode() + body.read_bytes().replace(b"\n", b"\r\n")


def expected(body: Path) -> str:
    return body.with_suffix(".expected").read_text(encoding="utf-8").strip()


def test_the_set_covers_every_language_and_client_and_each_quote_shows_mailgates_lines() -> None:
    names = {body.stem for body in BODIES}
    languages = ("en", "de", "fr", "es", "nl", "pt", "sv", "uk", "ru", "pl", "it", "ja", "zh")
    for client in ("outlook", "outlook-mobile", "gmail", "gmail-app", "google-inbox", "apple"):
        assert {f"{client}-{lang}" for lang in languages} <= names, client
    for kind in ("html-gmail-quote", "html-apple-blockquote", "html-outlook-web"):
        assert any(name.startswith(kind) for name in names), kind
    assert any(name.startswith("html-thunderbird") for name in names)
    assert any(name.startswith("forwarded-") for name in names)
    assert any(name.startswith("wrapped-de") for name in names)
    for body in BODIES:
        text = body.read_text(encoding="utf-8")
        assert all(line in text for line in MAILGATE_LINES), body.name
        assert body.with_suffix(".expected").exists(), body.name


@pytest.mark.parametrize("body", BODIES, ids=lambda p: p.name)
def test_only_what_the_approver_typed_is_read(body: Path) -> None:
    reply = parse(as_reply(body))

    assert reply.text == expected(body)
    for line in MAILGATE_LINES:
        assert line not in (reply.reason or "")


def test_the_whole_set_passes() -> None:
    """One number to report: how many of the bodies come out exactly as typed."""
    failed = [body.name for body in BODIES if parse(as_reply(body)).text != expected(body)]
    assert failed == [], f"{len(BODIES) - len(failed)}/{len(BODIES)} pass"
