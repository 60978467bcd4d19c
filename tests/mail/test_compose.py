from __future__ import annotations

from dataclasses import replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest
from bs4 import BeautifulSoup

from service import tokens
from service.domain import Ask, workflow_id
from service.mail.compose import compose_notice, compose_request, message_id_for
from service.reply_tokens import verify_reply_token

SECRETS = ["compose-test-key"]
NOW_MS = 1_767_261_600_000
WEEK_MS = 7 * 86_400_000
SENDER = "Mailgate <mailgate@mail.example.org>"
URL = "https://example.com/articles/42"
APPROVER = "ann@example.com"
REQUEST_ID = workflow_id(URL, APPROVER)


def make_ask(**overrides: object) -> Ask:
    promise_id = f"{REQUEST_ID}:2"
    link = tokens.mint(promise_id, APPROVER, secrets=SECRETS, now_ms=NOW_MS)
    ask = Ask(
        request_id=REQUEST_ID,
        promise_id=promise_id,
        first_promise_id=promise_id,
        round=1,
        url=URL,
        approver=APPROVER,
        summary="The article explains durable promises.\n\nIt ends with a benchmark.",
        previous_reason=None,
        decide_url=f"http://localhost:9000/decide/{link}",
        expires_at=NOW_MS + WEEK_MS,
    )
    return replace(ask, **overrides)  # type: ignore[arg-type]


def compose(ask: Ask, reply_domain: str | None = "reply.example.org") -> EmailMessage:
    """Compose, serialize and parse back, as a receiving client would see it."""
    message = compose_request(
        ask, sender=SENDER, reply_domain=reply_domain, secrets=SECRETS, now=NOW_MS
    )
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def subject_of(ask: Ask) -> str:
    message = compose_request(ask, sender=SENDER, reply_domain=None, secrets=SECRETS, now=NOW_MS)
    return str(message["Subject"])


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


def test_first_round_is_a_multipart_alternative_with_both_parts() -> None:
    message = compose(make_ask())
    text, html = parts(message)

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert subject_of(make_ask()) == "[Mailgate] Approve summary of example.com/articles/42"
    assert message["From"] == SENDER
    assert message["To"] == APPROVER
    assert message["Auto-Submitted"] == "auto-generated"
    assert parsedate_to_datetime(message["Date"]).timestamp() == NOW_MS / 1000
    assert message["In-Reply-To"] is None
    assert message["References"] is None
    for body in (text, html):
        assert "The article explains durable promises." in body
        assert "It ends with a benchmark." in body
        assert URL in body
        assert "Reply YES to approve or NO to reject; add a reason after NO" in body
        assert "Thu 8 Jan 2026, 10:00 UTC" in body


def test_links_carry_a_verifiable_decision_token_and_preselect_a_verdict() -> None:
    ask = make_ask()
    text, html = parts(compose(ask))
    anchors = {a.get_text(strip=True): a["href"] for a in BeautifulSoup(html, "lxml").find_all("a")}

    assert anchors["Approve"] == f"{ask.decide_url}?verdict=approve"
    assert anchors["Reject"] == f"{ask.decide_url}?verdict=reject"
    assert f"Approve: {ask.decide_url}?verdict=approve" in text
    assert f"Reject:  {ask.decide_url}?verdict=reject" in text
    token = str(anchors["Approve"]).rpartition("/decide/")[2].partition("?")[0]
    link = tokens.verify(token, secrets=SECRETS, ttl_s=WEEK_MS / 1000, now_ms=NOW_MS + 1000)
    assert (link.promise_id, link.approver) == (ask.promise_id, APPROVER)


def test_reply_to_names_the_round_with_a_verifiable_token() -> None:
    ask = make_ask()
    message = compose(ask)
    local, _, domain = message["Reply-To"].addresses[0].addr_spec.partition("@")

    assert domain == "reply.example.org"
    assert local.startswith("reply+")
    assert len(local) <= 64
    token = local.removeprefix("reply+")
    assert token == token.lower()
    verified = verify_reply_token(token, secrets=SECRETS)
    assert verified.promise_id == ask.promise_id
    assert verified.issued_at == NOW_MS


def test_without_a_reply_domain_there_is_no_reply_address_and_the_mail_says_so() -> None:
    message = compose(make_ask(), reply_domain=None)
    text, html = parts(message)

    assert message["Reply-To"] is None
    for body in (text, html):
        assert "Reply YES" not in body
        assert "replies to this email are not read" in body


def test_message_id_is_derived_from_the_promise_id_only() -> None:
    ask = make_ask()
    first = compose_request(ask, sender=SENDER, reply_domain=None, secrets=SECRETS, now=NOW_MS)
    later = compose_request(
        ask, sender=SENDER, reply_domain="r.example.org", secrets=SECRETS, now=NOW_MS + 60_000
    )
    other_round = compose_request(
        replace(ask, promise_id=f"{REQUEST_ID}:5"),
        sender=SENDER,
        reply_domain=None,
        secrets=SECRETS,
        now=NOW_MS,
    )

    assert first["Message-ID"] == later["Message-ID"]
    assert first["Message-ID"] == message_id_for(ask.promise_id, "mail.example.org")
    assert other_round["Message-ID"] != first["Message-ID"]


def test_a_reask_threads_to_the_first_round_and_says_why() -> None:
    ask = make_ask(
        promise_id=f"{REQUEST_ID}:5",
        first_promise_id=f"{REQUEST_ID}:2",
        round=2,
        previous_reason="Mention the benchmark numbers.",
        summary="A shorter summary with numbers.",
    )
    message = compose(ask)
    text, html = parts(message)
    first_id = message_id_for(f"{REQUEST_ID}:2", "mail.example.org")

    assert subject_of(ask) == "[Mailgate] Approve summary of example.com/articles/42 (round 2)"
    assert message["In-Reply-To"] == first_id
    assert message["References"] == first_id
    assert message["Message-ID"] == message_id_for(ask.promise_id, "mail.example.org")
    assert "Round 2" in text
    assert "Round 2" in html
    for body in (text, html):
        assert "Mention the benchmark numbers." in body
        assert "A shorter summary with numbers." in body


def test_html_is_self_contained_with_inlined_styles_and_escaped_text() -> None:
    ask = make_ask(summary='<script>alert("x")</script> & <img src="https://evil.test/p.png">')
    _, html = parts(compose(ask))
    soup = BeautifulSoup(html, "lxml")

    assert soup.find("script") is None
    assert soup.find("img") is None
    assert soup.find("link") is None
    assert '&lt;script&gt;alert("x")&lt;/script&gt; &amp; &lt;img' in html
    assert not [tag for tag in soup.find_all(src=True)]
    approve = soup.find("a", string="Approve")
    assert approve is not None
    assert "background: #15803d" in str(approve["style"])
    for style in soup.find_all("style"):
        assert style.get_text().lstrip().startswith("@media")


def test_summary_paragraphs_and_line_breaks_survive_in_html() -> None:
    ask = make_ask(summary="One.\nStill one.\n \nTwo.")
    _, html = parts(compose(ask))
    paragraphs = BeautifulSoup(html, "lxml").select("div.summary p")

    assert [p.decode_contents() for p in paragraphs] == ["One.<br/>Still one.", "Two."]


def test_a_sender_without_a_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="has no domain"):
        compose_request(make_ask(), sender="mailgate", reply_domain=None, secrets=SECRETS, now=0)


def test_notice_is_a_short_plain_auto_reply_in_the_thread() -> None:
    request_id = message_id_for(f"{REQUEST_ID}:2", "mail.example.org")
    notice = compose_notice(
        APPROVER,
        "[Mailgate] Reply YES or NO",
        "Reply YES to approve or NO to reject; add a reason after NO.",
        sender=SENDER,
        request_id=REQUEST_ID,
        in_reply_to=request_id,
        now=NOW_MS,
    )
    parsed = message_from_bytes(notice.as_bytes(), policy=policy.default)

    assert parsed.get_content_type() == "text/plain"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["In-Reply-To"] == request_id
    assert parsed["References"] == request_id
    assert parsed["To"] == APPROVER
    assert parsed["X-Mailgate-Request"] == REQUEST_ID
    assert parsed["Message-ID"].endswith("@mail.example.org>")
    assert parsedate_to_datetime(parsed["Date"]).timestamp() == NOW_MS / 1000
    assert "Reply YES to approve" in parsed.get_content()


def test_notice_without_a_thread_has_no_threading_headers() -> None:
    notice = compose_notice(
        APPROVER, "Hi", "Hello.", sender=SENDER, request_id=REQUEST_ID, in_reply_to=None, now=0
    )

    assert notice["In-Reply-To"] is None
    assert notice["References"] is None
    assert notice["Date"] is not None
