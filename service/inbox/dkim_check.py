"""Optional DKIM gate (``MAILGATE_REQUIRE_DKIM=1``): the reply is signed by the From domain.

A valid signature from *some* domain proves nothing about the approver, so the signing domain
must align with the From address (the same domain or a parent of it, as DMARC's relaxed
alignment allows). dkimpy does the cryptography; its DNS lookup is a parameter so tests run
without a resolver. Verification runs in a thread: the default lookup blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import dkim

TxtLookup = Callable[..., bytes | None]


async def verify(raw: bytes, from_address: str, dns_txt: TxtLookup | None) -> str | None:
    """None when the message is signed by its From domain, else what is wrong."""
    return await asyncio.to_thread(_verify, raw, from_address, dns_txt)


def _verify(raw: bytes, from_address: str, dns_txt: TxtLookup | None) -> str | None:
    from_domain = from_address.rpartition("@")[2].lower()
    signatures = sum(1 for line in raw.split(b"\n") if line.lower().startswith(b"dkim-signature:"))
    if signatures == 0:
        return "the reply carries no DKIM signature"
    for index in range(signatures):
        checker = dkim.DKIM(raw)
        try:
            valid = (
                checker.verify(idx=index, dnsfunc=dns_txt)
                if dns_txt is not None
                else checker.verify(idx=index)
            )
        except dkim.DKIMException:
            continue
        domain = (checker.domain or b"").decode("ascii", "replace").lower()
        if valid and (from_domain == domain or from_domain.endswith("." + domain)):
            return None
    return f"no valid DKIM signature aligned with {from_domain or 'the From address'}"
