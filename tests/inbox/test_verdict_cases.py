"""Our own answers, one file per rule in ``verdicts/``: what approves, and what never does.

Each YAML file states its rule, the verdict every case must get (``approve``, ``reject`` or
``unclear``), and the cases; a rejection case may give the reason it must yield. Every case is
read twice: as bare text, and as a whole reply with Mailgate's request quoted below it, the way
the listener sees it. Approvals are held to the stricter bar: a case that must not approve
never may, whatever else goes wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from service.inbox.replies import judge, parse
from service.inbox.verdicts import classify

VERDICTS = Path(__file__).resolve().parent / "verdicts"
APPROVER = "alice@example.com"
QUOTE = (
    "On Tue, Nov 24, 2026 at 10:02 AM Mailgate <mailgate@mailgate.test> wrote:\n"
    "> Summary: Example Corp sells three plans.\n"
    ">\n"
    "> Approve: https://mailgate.test/decide/tok?verdict=approve\n"
    "> Reject:  https://mailgate.test/decide/tok?verdict=reject\n"
    "> Or answer by email: Reply YES to approve or NO to reject; add a reason after NO.\n"
)


def load_cases() -> list[tuple[str, str, str, str | None]]:
    """(rule file, expected verdict, text, expected reason) for every case."""
    cases = []
    for path in sorted(VERDICTS.glob("*.yaml")):
        document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["rule"] and document["expect"] in {"approve", "reject", "unclear"}
        for case in document["cases"]:
            text, reason = (
                (case["text"], case.get("reason")) if isinstance(case, dict) else (case, None)
            )
            cases.append((path.stem, document["expect"], text, reason))
    return cases


CASES = load_cases()


def as_reply(text: str) -> bytes:
    headers = (
        f"From: Alice Martin <{APPROVER}>\nTo: reply+tok@mailgate.test\n"
        "Subject: Re: [Mailgate] Approve summary of example.com/pricing\n"
        "Message-ID: <case@example.com>\nMIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 8bit\n\n'
    )
    return f"{headers}{text}\n\n{QUOTE}".replace("\n", "\r\n").encode()


@pytest.mark.parametrize(
    ("rule", "expect", "text", "reason"), CASES, ids=[f"{c[0]}: {c[2]}" for c in CASES]
)
def test_case(rule: str, expect: str, text: str, reason: str | None) -> None:
    verdict, got_reason = classify(text)
    judged = judge(parse(as_reply(text)), approver=APPROVER)

    assert verdict == expect
    assert judged.why == expect
    if reason is not None:
        assert got_reason == reason
        assert judged.reason == reason


def test_no_case_that_must_not_approve_is_approved() -> None:
    false = [
        text
        for _, expect, text, _ in CASES
        if expect != "approve" and classify(text)[0] == "approve"
    ]
    missed = [
        text
        for _, expect, text, _ in CASES
        if expect == "approve" and classify(text)[0] != "approve"
    ]
    assert false == [], "false approvals"
    assert missed == [], f"{len(CASES) - len(missed)}/{len(CASES)} right"
