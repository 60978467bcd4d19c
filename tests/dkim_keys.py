"""One DKIM key for every test that sends mail, made once per run, and the DNS answer dkimpy's
verifier asks for in place of a resolver."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from service.mail.signing import DkimSigner, new_private_key

SELECTOR = "mailgate"


@functools.cache
def private_key() -> bytes:
    return new_private_key()


def signer(domain: str = "localhost", selector: str = SELECTOR) -> DkimSigner:
    return DkimSigner(domain, selector, private_key())


def write_key(directory: Path) -> Path:
    path = directory / "dkim.pem"
    path.write_bytes(private_key())
    path.chmod(0o600)
    return path


def dns_for(published: DkimSigner) -> Callable[..., bytes | None]:
    """A TXT lookup that knows only ``published``'s record, as DNS would serve it."""
    record = published.dns_record()

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        wanted = name.decode() if isinstance(name, bytes) else name
        return record.value.encode() if wanted.rstrip(".") == record.name else None

    return lookup
