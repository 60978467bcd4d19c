"""DKIM: the signature that lets a receiving server check our mail really comes from our domain.

dkimpy signs; ``cryptography`` makes the key and the public half published in DNS. The signature
covers the exact bytes ``service.mail.send`` puts on the wire, so nothing may re-serialize the
message after ``sign``. Headers Mailgate sets but a message lacks (``In-Reply-To`` on a first
round) are signed too: listed in ``h=`` while absent, they cannot be added later without breaking
the signature, and neither can a second ``From`` or ``Subject`` (each is listed twice).

Relaxed canonicalization of header and body lets a relay re-fold a header or change trailing
white space without invalidating the signature; anything more is tampering.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.errors import ConfigError

KEY_BITS = 2048
DNS_STRING_MAX_CHARS = 255
"""A TXT record is made of strings of at most 255 bytes; a 2048-bit key needs two."""

SIGNED_HEADERS = (
    b"from",
    b"from",
    b"to",
    b"subject",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"auto-submitted",
    b"x-auto-response-suppress",
    b"x-mailgate-request",
)


@dataclass(frozen=True)
class DnsRecord:
    name: str
    value: str

    def zone_line(self) -> str:
        """The record as a zone-file line, its value split into strings DNS can hold."""
        chunks = [
            self.value[at : at + DNS_STRING_MAX_CHARS]
            for at in range(0, len(self.value), DNS_STRING_MAX_CHARS)
        ]
        return f"{self.name}. IN TXT ( " + " ".join(f'"{c}"' for c in chunks) + " )"


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    private_key: bytes = field(repr=False)
    """PEM, PKCS#1 or PKCS#8, as ``read_key`` returns it."""

    def sign(self, data: bytes) -> bytes:
        """``data`` with a ``DKIM-Signature`` header in front; ``data`` is a whole message."""
        header = dkim.sign(
            data,
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return header + data

    def dns_record(self) -> DnsRecord:
        return DnsRecord(
            name=f"{self.selector}._domainkey.{self.domain}",
            value=f"v=DKIM1; k=rsa; p={public_key_base64(self.private_key)}",
        )


def new_private_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def read_key(path: Path) -> bytes:
    """The PEM private key in ``path``, checked now so a bad file stops the start, not a send."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        msg = f"the DKIM key {path} cannot be read: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    try:
        dkim.crypto.parse_pem_private_key(pem)
        serialization.load_pem_private_key(pem, password=None)
    except (dkim.crypto.UnparsableKeyError, ValueError, TypeError) as exc:
        msg = f"{path} holds no unencrypted PEM RSA private key for DKIM ({exc})"
        raise ConfigError(msg) from None
    return pem


def public_key_base64(private_pem: bytes) -> str:
    public = serialization.load_pem_private_key(private_pem, password=None).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")
