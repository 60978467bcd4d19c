"""The bytes every kind of email puts on the wire, read back from a real SMTP server.

Mail clients show what the bytes say, not what the message object meant: a subject folded before
its first word arrives as an empty Subject in MailHog, and a relay that must convert 8-bit text
breaks a DKIM signature. So these tests read what the sink received, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage

import dkim
import pytest
from dkim_keys import dns_for, signer
from smtp_sink import StartSink

from service.domain import Ask, workflow_id
from service.inbox.handler import HELP_TEXT
from service.mail.compose import SUBJECT_MAX_CHARS, compose_notice, compose_request
from service.mail.send import Mailer, SmtpSettings

SENDER = "Mailgate <mailgate@localhost>"
APPROVER = "ann@example.com"
NOW_MS = 1_767_261_600_000
URL_LENGTHS = range(20, 201)
ROUNDS = (1, 2, 10)
NOTICES = ("[Mailgate] Reply YES or NO", "[Mailgate] Already decided")
LINE_MAX_CHARS = 78


def url_of(length: int) -> str:
    """A URL of exactly ``length`` characters with path segments, like a real article's."""
    if length < 33:
        return "https://example.com/" + "abcdefghijklm"[: length - 20]
    url = "https://news.example.com/2026/01/" + "-".join(["tide-pools-and-sea-stars"] * 10)
    return url[:length]


def request(url: str, round_: int) -> EmailMessage:
    request_id = workflow_id(url, APPROVER)
    ask = Ask(
        request_id=request_id,
        promise_id=f"{request_id}:{round_ * 3}",
        first_promise_id=f"{request_id}:3",
        round=round_,
        url=url,
        approver=APPROVER,
        summary="Tide pools keep sea water when the tide goes out.\n\nThey shelter sea stars.",
        previous_reason="Mention the sea stars." if round_ > 1 else None,
        decide_url="http://localhost:9000/decide/tok",
        expires_at=NOW_MS + 86_400_000,
    )
    return compose_request(
        ask, sender=SENDER, reply_domain="reply.localhost", secrets=["wire-test-key"], now=NOW_MS
    )


def notice(subject: str) -> EmailMessage:
    return compose_notice(
        APPROVER,
        subject,
        HELP_TEXT,
        sender=SENDER,
        request_id="mg-0123456789abcdef0123",
        in_reply_to="<reply-1@example.com>",
        now=NOW_MS,
    )


def every_kind() -> Iterator[tuple[str, EmailMessage]]:
    for length in URL_LENGTHS:
        url = url_of(length)
        assert len(url) == length
        for round_ in ROUNDS:
            message = request(url, round_)
            yield str(message["Subject"]), message
    for subject in NOTICES:
        yield subject, notice(subject)


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def subject_lines(raw: bytes) -> list[bytes]:
    """The Subject field's physical lines, the first without its name."""
    found = re.search(rb"^Subject:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", header_block(raw), re.M)
    assert found is not None, "no Subject field"
    return found.group(1).split(b"\r\n")


async def test_no_subject_is_folded_away_at_any_url_length_round_or_notice(
    start_sink: StartSink,
) -> None:
    sink = await start_sink()
    mailer = Mailer(sink.settings(), signer())
    expected = []
    for subject, message in every_kind():
        assert len(subject) <= SUBJECT_MAX_CHARS
        expected.append((subject, await mailer.send(message)))

    assert len(sink.received) == len(expected) == len(URL_LENGTHS) * len(ROUNDS) + len(NOTICES)
    for received, (subject, sent) in zip(sink.received, expected, strict=True):
        assert received.raw == sent, "the server got other bytes than the ones signed"
        lines = subject_lines(received.raw)
        assert lines == [b" " + subject.encode("ascii")], lines
        assert received.message["Subject"] == subject


def test_subjects_name_the_page_and_the_round() -> None:
    short = request("https://example.com/articles/42", 2)["Subject"]
    long = request("https://blog.rust-lang.org/2025/02/20/Rust-1.85.0.html", 1)["Subject"]
    clipped = request(url_of(200), 10)["Subject"]

    assert short == "[Mailgate] Approve summary of example.com/articles/42 (round 2)"
    assert long == "[Mailgate] Approve summary of blog.rust-lang.org/.../Rust-1.85.0.html"
    assert clipped.startswith("[Mailgate] Approve summary of news.example.com/2026/")
    assert clipped.endswith("... (round 10)")
    assert len(clipped) == SUBJECT_MAX_CHARS


def test_an_international_address_stays_ascii_in_the_subject() -> None:
    subject = request("https://bücher.example/straße", 1)["Subject"]
    assert subject == "[Mailgate] Approve summary of xn--bcher-kva.example/stra%C3%9Fe"


@pytest.mark.parametrize("round_", ROUNDS)
def test_the_signed_bytes_are_7_bit_with_short_lines(round_: int) -> None:
    message = request(url_of(200), round_)
    message.replace_header("To", "Zoë Ångström <zoe@example.com>")
    raw = Mailer(SmtpSettings("127.0.0.1", 25), signer()).wire(message)

    assert max(raw) < 128, "8-bit bytes would be converted by some relay, breaking DKIM"
    assert max(len(line) for line in raw.split(b"\r\n")) <= LINE_MAX_CHARS
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert dkim.verify(raw, dnsfunc=dns_for(signer()))


def test_every_kind_names_its_request_for_mail_filters() -> None:
    first = request("https://example.com/a", 1)
    again = request("https://example.com/a", 2)

    assert first["X-Mailgate-Request"] == again["X-Mailgate-Request"]
    assert first["X-Mailgate-Request"] == workflow_id("https://example.com/a", APPROVER)
    assert notice(NOTICES[0])["X-Mailgate-Request"] == "mg-0123456789abcdef0123"
