from __future__ import annotations

import ssl
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme
from dkim_keys import signer
from smtp_sink import StartSink, free_port, password_checker

from service.errors import DeliveryRejected, Permanent
from service.mail.compose import compose_notice
from service.mail.send import Mailer, SmtpSettings, TransientDeliveryError, smtp_reachable

SENDER = "Mailgate <mailgate@localhost>"
NOW_MS = 1_767_261_600_000


def note(to: str = "ann@example.com") -> EmailMessage:
    return compose_notice(
        to,
        "Mailgate test",
        "Hello.",
        sender=SENDER,
        request_id="mg-0123",
        in_reply_to=None,
        now=NOW_MS,
    )


async def send(message: EmailMessage, smtp: SmtpSettings) -> bytes:
    return await Mailer(smtp, signer()).send(message)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_delivers_to_the_recipient_in_the_to_header(start_sink: StartSink) -> None:
    sink = await start_sink()

    await send(note(), sink.settings())

    [received] = sink.received
    assert received.rcpt_tos == ["ann@example.com"]
    assert received.mail_from == "mailgate@localhost"
    assert received.message["Subject"] == "Mailgate test"
    assert not received.over_tls


async def test_a_5xx_recipient_refusal_is_a_permanent_rejection(start_sink: StartSink) -> None:
    sink = await start_sink(rcpt_replies=["550 5.1.1 <nobody@example.com>: no such user"])

    with pytest.raises(DeliveryRejected) as caught:
        await send(note("nobody@example.com"), sink.settings())

    assert isinstance(caught.value, Permanent)
    assert "nobody@example.com" in str(caught.value)
    assert "550" in str(caught.value)
    assert sink.received == []


async def test_a_4xx_recipient_refusal_is_transient(start_sink: StartSink) -> None:
    sink = await start_sink(rcpt_replies=["451 4.3.0 Try again later"])

    with pytest.raises(TransientDeliveryError) as caught:
        await send(note(), sink.settings())

    assert (
        str(caught.value) == f"SMTP server 127.0.0.1:{sink.port} answered 451 4.3.0 Try again later"
    )
    assert sink.received == []


async def test_content_refused_with_5xx_is_a_permanent_rejection(start_sink: StartSink) -> None:
    sink = await start_sink(data_replies=["554 5.7.1 Message rejected as spam"])

    with pytest.raises(DeliveryRejected, match=r"refused the message: 554 5\.7\.1"):
        await send(note(), sink.settings())


async def test_content_deferred_with_4xx_is_transient(start_sink: StartSink) -> None:
    sink = await start_sink(data_replies=["452 4.3.1 Insufficient system storage"])

    with pytest.raises(TransientDeliveryError, match="answered 452"):
        await send(note(), sink.settings())


async def test_a_closed_port_is_transient_and_says_unreachable() -> None:
    port = free_port()

    with pytest.raises(TransientDeliveryError) as caught:
        await send(note(), SmtpSettings(host="127.0.0.1", port=port, timeout_s=5))

    assert str(caught.value) == f"SMTP server 127.0.0.1:{port} unreachable"


async def test_reachability_probe(start_sink: StartSink) -> None:
    sink = await start_sink()

    assert await smtp_reachable(sink.settings())
    assert not await smtp_reachable(SmtpSettings(host="127.0.0.1", port=free_port()))


async def test_starttls_with_login_upgrades_before_authenticating(
    start_sink: StartSink, server_tls: ssl.SSLContext, ca_file: str
) -> None:
    sink = await start_sink(starttls=server_tls, authenticator=password_checker("gate", "s3cret"))
    settings = sink.settings(tls="starttls", ca_file=ca_file, user="gate", password="s3cret")

    assert await smtp_reachable(settings)
    await send(note(), settings)

    [received] = sink.received
    assert received.over_tls
    assert received.login == "gate"


async def test_a_wrong_password_is_transient_and_named(
    start_sink: StartSink, server_tls: ssl.SSLContext, ca_file: str
) -> None:
    sink = await start_sink(starttls=server_tls, authenticator=password_checker("gate", "s3cret"))
    settings = sink.settings(tls="starttls", ca_file=ca_file, user="gate", password="pw-4711-zz")

    with pytest.raises(TransientDeliveryError, match="refused the login"):
        await send(note(), settings)

    assert sink.received == []
    assert "pw-4711-zz" not in repr(settings)


async def test_an_untrusted_certificate_is_not_sent_to(
    start_sink: StartSink, server_tls: ssl.SSLContext
) -> None:
    sink = await start_sink(starttls=server_tls)

    with pytest.raises(TransientDeliveryError):
        await send(note(), sink.settings(tls="starttls"))

    assert sink.received == []


async def test_plain_text_to_a_server_that_requires_starttls_waits_for_the_operator(
    start_sink: StartSink, server_tls: ssl.SSLContext
) -> None:
    sink = await start_sink(starttls=server_tls)

    with pytest.raises(TransientDeliveryError, match=r"refused the sender .* 530"):
        await send(note(), sink.settings(tls="none"))

    assert sink.received == []


async def test_implicit_tls(
    start_sink: StartSink, server_tls: ssl.SSLContext, ca_file: str
) -> None:
    sink = await start_sink(implicit_tls=server_tls)
    settings = sink.settings(tls="tls", ca_file=ca_file)

    assert await smtp_reachable(settings)
    await send(note(), settings)

    [received] = sink.received
    assert received.over_tls
