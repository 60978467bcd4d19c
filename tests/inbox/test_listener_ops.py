"""The listener as an operator sees it: STARTTLS, DKIM gate, and a clean 421 on shutdown."""

from __future__ import annotations

import asyncio
import base64
import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import dkim
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support import REPLY_DOMAIN, StartListener

from service.inbox import dkim_check


async def test_starttls_with_the_configured_certificate(
    start_listener: StartListener, tmp_path: Path
) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert(REPLY_DOMAIN, "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "chain.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    mailgate, _ = await start_listener(
        MAILGATE_INBOUND_TLS_CERT=str(tmp_path / "chain.pem"),
        MAILGATE_INBOUND_TLS_KEY=str(tmp_path / "key.pem"),
    )
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=mailgate.app.inbox.port,
        tls_context=client_context,
        start_tls=False,
    ) as client:
        await client.ehlo()
        assert client.supports_extension("starttls")
        await client.starttls()
        assert client.get_transport_info("ssl_object") is not None
        code, _ = await client.ehlo()
        assert code == 250


async def test_idle_sessions_get_421_on_shutdown(start_listener: StartListener) -> None:
    mailgate, _ = await start_listener()
    reader, writer = await asyncio.open_connection("127.0.0.1", mailgate.app.inbox.port)
    assert (await reader.readline()).startswith(b"220")
    writer.write(b"HELO client.example\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"250")
    await mailgate.app.inbox.stop()
    assert (await reader.readline()).startswith(b"421")
    assert await reader.read() == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", mailgate.app.inbox.port)


def _signed(key_pem: bytes, sender_domain: str, signer_domain: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"alice@{sender_domain}"
    message["To"] = f"reply+x@{REPLY_DOMAIN}"
    message["Subject"] = "Re: request"
    message.set_content("Yes")
    raw = message.as_bytes()
    signature = dkim.sign(
        raw, b"sel", signer_domain.encode(), key_pem, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + raw


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _dns(records: dict[bytes, bytes]):
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


async def test_dkim_aligned_signature_passes(keypair):
    private, record = keypair
    raw = _signed(private, "example.com", "example.com")
    assert (
        await dkim_check.verify(
            raw, "alice@example.com", _dns({b"sel._domainkey.example.com.": record})
        )
        is None
    )


async def test_dkim_refuses_unsigned_misaligned_and_tampered(keypair):
    private, record = keypair
    dns = _dns({b"sel._domainkey.example.com.": record, b"sel._domainkey.evil.example.": record})
    body_only = b"From: alice@example.com\r\nSubject: x\r\n\r\nYes\r\n"
    assert "no DKIM signature" in await dkim_check.verify(body_only, "alice@example.com", dns)
    misaligned = _signed(private, "example.com", "evil.example")
    assert "aligned" in await dkim_check.verify(misaligned, "alice@example.com", dns)
    tampered = _signed(private, "example.com", "example.com").replace(b"Yes", b"No!")
    assert await dkim_check.verify(tampered, "alice@example.com", dns) is not None
