from __future__ import annotations

import asyncio

import pytest
from dkim_keys import signer
from smtp_sink import Sink, StartSink, free_port
from support import jittered

from service.domain import Ask, workflow_id
from service.errors import DeliveryRejected
from service.mail.compose import message_id_for
from service.mail.send import Mailer, SmtpSettings
from service.reply_tokens import verify_reply_token
from service.steps.notify import Notifier, SmtpNotifier, send_sample

SECRETS = ["notify-test-key"]
SENDER = "Mailgate <mailgate@localhost>"
URL = "https://example.com/post"
APPROVER = "bob@example.com"
REQUEST_ID = workflow_id(URL, APPROVER)
NOW_MS = 1_767_261_600_000


def make_ask(promise_seq: int = 2, round_: int = 1) -> Ask:
    return Ask(
        request_id=REQUEST_ID,
        promise_id=f"{REQUEST_ID}:{promise_seq}",
        first_promise_id=f"{REQUEST_ID}:2",
        round=round_,
        url=URL,
        approver=APPROVER,
        summary="A post about queues.",
        previous_reason="Too short." if round_ > 1 else None,
        decide_url="http://localhost:9000/decide/tok",
        expires_at=NOW_MS + 86_400_000,
    )


class Clock:
    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms


def notifier_for(settings: SmtpSettings, **overrides: object) -> SmtpNotifier:
    options: dict[str, object] = {
        "mailer": Mailer(settings, signer()),
        "sender": SENDER,
        "reply_domain": "reply.localhost",
        "secrets": SECRETS,
        "clock": Clock(NOW_MS),
        "backoff_s": 0.01,
    }
    return SmtpNotifier(**(options | overrides))  # type: ignore[arg-type]


def test_smtp_notifier_is_a_notifier() -> None:
    notifier = notifier_for(SmtpSettings(host="127.0.0.1", port=1))

    assert isinstance(notifier, Notifier)
    assert notifier.name == "smtp"


async def test_ask_emails_the_approver_a_request_they_can_reply_to(start_sink: StartSink) -> None:
    sink = await start_sink()
    ask = make_ask()

    await notifier_for(sink.settings()).ask(ask)

    [received] = sink.received
    message = received.message
    assert received.rcpt_tos == [APPROVER]
    assert message.get_content_type() == "multipart/alternative"
    assert message["Message-ID"] == message_id_for(ask.promise_id, "localhost")
    reply_to = message["Reply-To"].addresses[0]
    assert reply_to.domain == "reply.localhost"
    token = reply_to.username.removeprefix("reply+")
    assert verify_reply_token(token, secrets=SECRETS).promise_id == ask.promise_id
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    assert f'href="{ask.decide_url}?verdict=approve"' in html.get_content()


async def test_a_forced_resend_is_the_same_message(start_sink: StartSink) -> None:
    """A crash after sending but before the checkpoint re-runs the step later."""
    sink = await start_sink()
    clock = Clock(NOW_MS)
    notifier = notifier_for(sink.settings(), clock=clock)
    ask = make_ask()

    await notifier.ask(ask)
    clock.now_ms += 90_000
    await notifier.ask(ask)

    first, again = (r.message for r in sink.received)
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Subject"] == again["Subject"]
    tokens = [m["Reply-To"].addresses[0].username.removeprefix("reply+") for m in (first, again)]
    promises = {verify_reply_token(t, secrets=SECRETS).promise_id for t in tokens}
    assert promises == {ask.promise_id}


async def test_a_reask_threads_under_the_first_round(start_sink: StartSink) -> None:
    sink = await start_sink()

    await notifier_for(sink.settings()).ask(make_ask(promise_seq=2))
    await notifier_for(sink.settings()).ask(make_ask(promise_seq=5, round_=2))

    first, second = (r.message for r in sink.received)
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"] == first["Message-ID"]
    assert second["Message-ID"] != first["Message-ID"]


async def test_a_4xx_is_retried_with_a_status_then_delivered(start_sink: StartSink) -> None:
    sink = await start_sink(rcpt_replies=["451 4.3.0 Mailbox busy, try later"])
    notes: list[str] = []

    await notifier_for(sink.settings(), on_retry=notes.append).ask(make_ask())

    assert sink.handler.rcpt_attempts == 2
    assert len(sink.received) == 1
    assert notes == [
        f"SMTP server 127.0.0.1:{sink.port} answered 451 4.3.0 Mailbox busy, try later, retrying"
    ]


async def test_backoff_doubles_up_to_its_cap_plus_jitter(start_sink: StartSink) -> None:
    """Jitter spreads rounds that failed together, at the cap too (``service.retry.SMTP``)."""
    sink = await start_sink(rcpt_replies=["421 4.7.0 Slow down"] * 6)
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    notifier = notifier_for(sink.settings(), backoff_s=1.0, max_backoff_s=5.0, sleep=record)
    await notifier.ask(make_ask())

    assert jittered(delays, [1.0, 2.0, 4.0, 5.0, 5.0, 5.0], jitter_s=1.0)
    assert len(set(delays[3:])) > 1
    assert len(sink.received) == 1


async def test_an_unreachable_server_is_waited_for(start_sink: StartSink) -> None:
    """Nothing listens at first; the server comes up during the first backoff."""
    port = free_port()
    notes: list[str] = []
    started: list[Sink] = []

    async def start_server_then_sleep(delay: float) -> None:
        if not started:
            started.append(await start_sink(port=port))
        await asyncio.sleep(delay)

    settings = SmtpSettings(host="127.0.0.1", port=port, timeout_s=5)
    notifier = notifier_for(settings, on_retry=notes.append, sleep=start_server_then_sleep)
    await notifier.ask(make_ask())

    assert notes == [f"SMTP server 127.0.0.1:{port} unreachable, retrying"]
    assert len(started[0].received) == 1


async def test_a_5xx_rejection_fails_at_once_without_retrying(start_sink: StartSink) -> None:
    sink = await start_sink(rcpt_replies=["550 5.1.1 <bob@example.com>: Recipient unknown"])
    notes: list[str] = []

    with pytest.raises(DeliveryRejected, match=r"bob@example\.com: 550 5\.1\.1"):
        await notifier_for(sink.settings(), on_retry=notes.append).ask(make_ask())

    assert notes == []
    assert sink.handler.rcpt_attempts == 1
    assert sink.received == []


async def test_mail_test_sends_a_sample_request(start_sink: StartSink) -> None:
    sink = await start_sink()

    await send_sample(
        "carol@example.com",
        mailer=Mailer(sink.settings(), signer()),
        sender=SENDER,
        reply_domain=None,
        secrets=SECRETS,
        public_url="http://localhost:9000/",
    )

    [received] = sink.received
    message = received.message
    assert received.rcpt_tos == ["carol@example.com"]
    assert message["Subject"].startswith("[Mailgate test] Approve summary of")
    assert message["Reply-To"] is None
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    assert "http://localhost:9000/decide/mail-test?verdict=approve" in text.get_content()
    assert "mailgate mail-test" in text.get_content()


async def test_mail_test_reports_a_rejection_at_once(start_sink: StartSink) -> None:
    sink = await start_sink(rcpt_replies=["550 5.1.1 no such user"])

    with pytest.raises(DeliveryRejected):
        await send_sample(
            "nobody@example.com",
            mailer=Mailer(sink.settings(), signer()),
            sender=SENDER,
            reply_domain="reply.localhost",
            secrets=SECRETS,
            public_url="http://localhost:9000",
        )
