"""DKIM: what we send verifies with the key we publish, and stops verifying when tampered with.

dkimpy verifies, as a receiving server would, through a DNS lookup the test injects; the
listener's own DKIM gate (``service.inbox.dkim_check``) must agree with it.
"""

from __future__ import annotations

import stat
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from dkim_keys import dns_for, private_key, signer, write_key

from service import config
from service.app import dkim_signer_for
from service.domain import Ask, workflow_id
from service.errors import ConfigError
from service.inbox import dkim_check
from service.mail.compose import compose_notice, compose_request
from service.mail.send import Mailer, SmtpSettings
from service.mail.signing import DNS_STRING_MAX_CHARS, DkimSigner, new_private_key, read_key

DOMAIN = "mail.example.org"
SENDER = f"Mailgate <mailgate@{DOMAIN}>"
URL = "https://example.com/articles/42"
APPROVER = "ann@example.com"
NOW_MS = 1_767_261_600_000
SIGNED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "auto-submitted",
    "x-auto-response-suppress",
    "x-mailgate-request",
}


def ask(round_: int) -> Ask:
    request_id = workflow_id(URL, APPROVER)
    return Ask(
        request_id=request_id,
        promise_id=f"{request_id}:{round_ * 3}",
        first_promise_id=f"{request_id}:3",
        round=round_,
        url=URL,
        approver=APPROVER,
        summary="Ünïcode survives: the summary of a page.",
        previous_reason="Too long." if round_ > 1 else None,
        decide_url="https://mailgate.example.org/decide/tok",
        expires_at=NOW_MS + 86_400_000,
    )


def kinds() -> dict[str, EmailMessage]:
    def request(round_: int) -> EmailMessage:
        return compose_request(
            ask(round_), sender=SENDER, reply_domain="r.example.org", secrets=["k"], now=NOW_MS
        )

    note = compose_notice(
        APPROVER,
        "[Mailgate] Already decided",
        "This round was already approved.",
        sender=SENDER,
        request_id="mg-1",
        in_reply_to="<r@example.com>",
        now=NOW_MS,
    )
    return {"request": request(1), "re-ask": request(2), "notice": note}


def wire(message: EmailMessage, key: DkimSigner | None = None) -> bytes:
    return Mailer(SmtpSettings("127.0.0.1", 25), key or signer(DOMAIN)).wire(message)


def signature_tags(raw: bytes) -> dict[str, str]:
    header = raw.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "")
    value = header.split("DKIM-Signature:", 1)[1].split("\n")[0]
    tags = (part.strip().partition("=") for part in value.split(";") if part.strip())
    return {name: "".join(content.split()) for name, _, content in tags}


@pytest.mark.parametrize("kind", ["request", "re-ask", "notice"])
def test_every_kind_verifies_with_the_published_key(kind: str) -> None:
    raw = wire(kinds()[kind])
    lookup = dns_for(signer(DOMAIN))

    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=lookup)


async def test_the_listener_dkim_gate_accepts_our_own_mail() -> None:
    raw = wire(kinds()["request"])
    assert await dkim_check.verify(raw, f"mailgate@{DOMAIN}", dns_for(signer(DOMAIN))) is None


def test_the_signature_covers_the_headers_that_identify_and_thread_a_request() -> None:
    tags = signature_tags(wire(kinds()["re-ask"]))

    assert tags["d"] == DOMAIN
    assert tags["s"] == "mailgate"
    assert tags["c"] == "relaxed/relaxed"
    assert tags["a"] == "rsa-sha256"
    signed = tags["h"].split(":")
    assert set(signed) >= SIGNED
    assert signed.count("from") == 2 and signed.count("subject") == 2


@pytest.mark.parametrize(
    ("change", "old", "new"),
    [
        ("the subject", b"Subject: [Mailgate] Approve", b"Subject: [Mailgate] Reject"),
        ("the body", b"Approve summary", b"Approve summarx"),
        ("a second From", b"\r\nTo: ", b"\r\nFrom: evil@example.net\r\nTo: "),
        ("a thread", b"\r\nTo: ", b"\r\nIn-Reply-To: <other@example.net>\r\nTo: "),
        ("a Reply-To", b"reply+", b"reply+x"),
    ],
)
def test_tampering_breaks_the_signature(change: str, old: bytes, new: bytes) -> None:
    raw = wire(kinds()["request"])
    assert old in raw
    assert not dkim.verify(raw.replace(old, new, 1), dnsfunc=dns_for(signer(DOMAIN)))


def test_a_relay_refolding_headers_keeps_the_signature() -> None:
    raw = wire(kinds()["request"])
    refolded = raw.replace(b"\r\nTo: ann@example.com", b"\r\nTo:\r\n\tann@example.com", 1)
    assert refolded != raw
    assert dkim.verify(refolded, dnsfunc=dns_for(signer(DOMAIN)))


def test_another_key_does_not_verify() -> None:
    impostor = DkimSigner(DOMAIN, "mailgate", new_private_key())
    raw = wire(kinds()["notice"], impostor)
    assert not dkim.verify(raw, dnsfunc=dns_for(signer(DOMAIN)))


def test_the_dns_record_is_what_dkim_wants_in_strings_dns_can_hold() -> None:
    record = signer(DOMAIN).dns_record()
    line = record.zone_line()
    strings = line.split("(", 1)[1].rsplit(")", 1)[0].split()

    assert record.name == f"mailgate._domainkey.{DOMAIN}"
    assert record.value.startswith("v=DKIM1; k=rsa; p=MII")
    assert line.startswith(f"mailgate._domainkey.{DOMAIN}. IN TXT ( ")
    assert all(len(s.strip('"')) <= DNS_STRING_MAX_CHARS for s in strings)
    assert "".join(s.strip('"') for s in strings) == record.value.replace(" ", "")


# ── where the key comes from ────────────────────────────────────────────────


def test_embedded_generates_a_private_key_once_into_the_data_dir(tmp_path: Path) -> None:
    settings = config.load({"MAILGATE_DATA_DIR": str(tmp_path), "MAILGATE_FROM": SENDER})

    first = dkim_signer_for(settings)
    again = dkim_signer_for(settings)

    path = tmp_path / "dkim.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first == again
    assert (first.domain, first.selector) == (DOMAIN, "mailgate")
    assert [p.name for p in tmp_path.iterdir()] == ["dkim.pem"]


def test_a_key_file_and_selector_are_used_as_given(tmp_path: Path) -> None:
    settings = config.load(
        {
            "MAILGATE_DATA_DIR": str(tmp_path / "data"),
            "MAILGATE_DKIM_KEY_FILE": str(write_key(tmp_path)),
            "MAILGATE_DKIM_SELECTOR": "s2026",
            "RESONATE_URL": "http://127.0.0.1:8001",
            "MAILGATE_FROM": SENDER,
        }
    )
    signing = dkim_signer_for(settings)

    assert signing.private_key == private_key()
    assert signing.selector == "s2026"
    assert not (tmp_path / "data").exists()


def test_split_deployments_must_name_the_shared_key() -> None:
    settings = config.load({"RESONATE_URL": "http://127.0.0.1:8001"})
    with pytest.raises(
        ConfigError, match="MAILGATE_DKIM_KEY_FILE is required with a shared engine"
    ):
        dkim_signer_for(settings)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot be read"),
        (b"", "no unencrypted PEM RSA private key"),
        (b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", "no unencr"),
    ],
)
def test_an_unusable_key_file_stops_the_start_naming_the_file(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "dkim.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=problem) as caught:
        read_key(path)
    assert str(path) in str(caught.value)


def test_a_bad_selector_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="MAILGATE_DKIM_SELECTOR"):
        config.load({"MAILGATE_DKIM_SELECTOR": "two words"})
