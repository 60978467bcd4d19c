"""Every kind of email Mailgate sends, as signed bytes, scored by Debian's SpamAssassin.

Local rules only (no network), so the score is about what we write, not about DNS reputation:
it must stay at 0.5 or below, far from the 5.0 that files mail as spam. ``mailgate mail-test``
prints the same report for the operator's own settings.
"""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from dkim_keys import signer

from service.domain import Ask, workflow_id
from service.inbox.handler import HELP_TEXT
from service.mail import spamcheck
from service.mail.compose import compose_notice, compose_request
from service.mail.send import Mailer, SmtpSettings

MAX_POINTS = 0.5
DOMAIN = "mail.example.org"
SENDER = f"Mailgate <mailgate@{DOMAIN}>"
URL = "https://blog.rust-lang.org/2025/02/20/Rust-1.85.0.html"
APPROVER = "ann@example.com"
NOW_MS = 1_767_261_600_000
SUMMARY = (
    "The Rust project released version 1.85, which stabilises async closures and ships the 2024 "
    "edition of the language. The new edition changes how temporaries in tail expressions are "
    "dropped and reserves the gen keyword.\n\nThe release notes stress that existing crates keep "
    "compiling: editions are opt-in per crate, and cargo fix migrates most code automatically."
)

REPORT = """\
Content preview:  hello there

Content analysis details:   (1.2 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
-0.0 NO_RELAYS              Informational: message was not relayed via SMTP
 1.2 MISSING_DATE           Missing Date: header
 0.0 HTML_IMAGE_ONLY_04     BODY: HTML: images with 0-400 bytes of words
                            and a long description that wraps
"""


def request(round_: int, reply_domain: str | None) -> bytes:
    request_id = workflow_id(URL, APPROVER)
    ask = Ask(
        request_id=request_id,
        promise_id=f"{request_id}:{round_ * 3}",
        first_promise_id=f"{request_id}:3",
        round=round_,
        url=URL,
        approver=APPROVER,
        summary=SUMMARY,
        previous_reason="Please mention the edition changes." if round_ > 1 else None,
        decide_url=f"https://mailgate.{DOMAIN}/decide/AbCdEf0123456789.XyZ",
        expires_at=NOW_MS + 7 * 86_400_000,
    )
    message = compose_request(
        ask, sender=SENDER, reply_domain=reply_domain, secrets=["spam-test-key"], now=NOW_MS
    )
    return wire(message)


def notice(subject: str, text: str) -> bytes:
    message = compose_notice(
        APPROVER,
        subject,
        text,
        sender=SENDER,
        request_id=workflow_id(URL, APPROVER),
        in_reply_to="<CAF=reply-1@mail.gmail.com>",
        now=NOW_MS,
    )
    return wire(message)


def wire(message: EmailMessage) -> bytes:
    return Mailer(SmtpSettings("127.0.0.1", 25), signer(DOMAIN)).wire(message)


KINDS = {
    "request": lambda: request(1, f"reply.{DOMAIN}"),
    "request, links only": lambda: request(1, None),
    "re-ask (round 2)": lambda: request(2, f"reply.{DOMAIN}"),
    "help notice": lambda: notice("[Mailgate] Reply YES or NO", HELP_TEXT),
    "already-decided notice": lambda: notice(
        "[Mailgate] Already decided",
        "This round was already approved by ann@example.com via link; your reply changed nothing.",
    ),
}


@pytest.mark.slow
@pytest.mark.skipif(spamcheck.spamassassin() is None, reason="spamassassin is not installed")
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_email_scores_at_most_half_a_point(kind: str) -> None:
    report = spamcheck.score(KINDS[kind]())

    assert report.required == 5.0
    assert report.score <= MAX_POINTS, report.describe()
    assert {h.rule for h in report.hits} >= {"NO_RELAYS"}, "the report lists the rules that fired"


def test_the_report_is_read_rule_by_rule() -> None:
    report = spamcheck.parse_report("X-Spam-Status: No\n\n" + REPORT)

    assert (report.score, report.required) == (1.2, 5.0)
    assert [(h.rule, h.points) for h in report.hits] == [
        ("NO_RELAYS", -0.0),
        ("MISSING_DATE", 1.2),
        ("HTML_IMAGE_ONLY_04", 0.0),
    ]
    assert report.hits[2].description.endswith(
        "0-400 bytes of words and a long description that wraps"
    )
    assert "1.2 MISSING_DATE" in report.describe()


def test_no_report_is_an_error_that_says_what_the_program_said() -> None:
    with pytest.raises(spamcheck.SpamCheckError, match="config: unparseable"):
        spamcheck.parse_report("From: a@example.com\n\nhi\n", problem="config: unparseable line")
    with pytest.raises(spamcheck.SpamCheckError, match="no report"):
        spamcheck.score(b"Subject: hi\r\n\r\nhi\r\n", program="cat")
