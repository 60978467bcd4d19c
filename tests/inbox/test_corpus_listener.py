"""The labeled corpus through the real listener: each reply answers its own waiting round.

This is the reply parser's acceptance test at full depth: SMTP conversation, token check,
sender check, parsing, decision, and the reason that reaches the re-summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from email import message_from_bytes, policy
from email.utils import parseaddr
from pathlib import Path

import aiosmtplib
import pytest
from support import ARTICLE, PageServer, StartListener

CORPUS = Path(__file__).resolve().parent / "corpus"

pytestmark = pytest.mark.slow


def _normalized(text: str | None) -> str:
    return " ".join((text or "").replace("\r\n", "\n").split())


async def test_every_corpus_case_through_the_listener(
    start_listener: StartListener, page_server: PageServer
) -> None:
    labels = json.loads((CORPUS / "labels.json").read_text())
    mailgate, sink = await start_listener()
    names = sorted(labels)
    requests: dict[str, str] = {}
    for name in names:
        url = page_server.add(f"/{name}", ARTICLE)
        body = {"url": url, "email": "alice@example.com"}
        requests[name] = (await mailgate.client.post("/requests", json=body)).json()["id"]
    async with asyncio.timeout(120):
        while len(sink.received) < len(names):
            await asyncio.sleep(0.05)
    emails = {m.message["X-Mailgate-Request"]: m.message for m in sink.received}

    for name in names:
        request = emails[requests[name]]
        token = request["Reply-To"].removeprefix("reply+").partition("@")[0]
        raw = (CORPUS / name).read_bytes()
        raw = raw.replace(b"{{TOKEN}}", token.encode()).replace(
            b"{{MESSAGE_ID}}", request["Message-ID"].encode()
        )
        headers = message_from_bytes(raw, policy=policy.default)
        return_path = headers.get("Return-Path")
        envelope_from = parseaddr(str(return_path if return_path is not None else headers["From"]))[
            1
        ]
        recipient = parseaddr(str(headers["To"]))[1]
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mailgate.app.inbox.port) as client:
            refused = (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPDataError)
            with contextlib.suppress(*refused):  # the listener's 550s are outcomes too
                await client.sendmail(envelope_from, [recipient], raw)

    await asyncio.sleep(1.0)
    wrong, false_approvals = [], []
    for name in names:
        label = labels[name]
        status = (await mailgate.client.get(f"/requests/{requests[name]}")).json()
        first = status["rounds"][0] if status["rounds"] else {}
        decision = first.get("decision") or "none"
        reason_ok = label["decision"] != "reject" or _normalized(label["feedback"]) in _normalized(
            first.get("reason")
        )
        if decision != label["decision"] or not reason_ok:
            wrong.append(f"{name} [{label['why']}]: got {decision} {first.get('reason')!r}")
        if decision == "approve" and label["decision"] != "approve":
            false_approvals.append(name)
    assert false_approvals == []
    assert wrong == [], f"{len(names) - len(wrong)}/{len(names)} right:\n" + "\n".join(wrong)
