"""The labeled reply corpus through `parse` and `judge`, scored per category.

`corpus/` is this project's copy of `../shared/replies` (a user's clone has no `../shared`);
where the original is present, the copy must be identical to it.

The listener's corpus test sends the same files over SMTP; this one is the fast, pure version.
The token check is the SMTP handler's job, so it is simulated here the way the corpus README
describes it: the envelope recipient is the `To` address after substitution, and only
`reply+<the round's token>@mailgate.test` reaches the round.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from email.utils import parseaddr
from pathlib import Path

import pytest
from shared_files import shared_file

from service.inbox.replies import Judgement, judge, parse

CORPUS = Path(__file__).resolve().parent / "corpus"
LABELS: dict[str, dict[str, str | None]] = json.loads((CORPUS / "labels.json").read_text())
APPROVER = "alice@example.com"
TOKEN = "r1k3j5h7g9f2d4s6a8"
REQUEST_ID = "<mg-0123456789abcdef0123.1@mailgate.test>"
JUDGED_CATEGORIES = {"approve", "reject", "unclear", "auto-reply", "wrong-sender", "bad-token"}
"""Categories `judge` names itself; "not-a-reply" mail only has to decide nothing."""


def _header(raw: bytes, name: str) -> str | None:
    found = re.search(rb"^" + name.encode() + rb":[ \t]*(.*)$", raw, re.MULTILINE | re.IGNORECASE)
    return found.group(1).decode().strip() if found else None


def outcome(name: str) -> Judgement:
    raw = (CORPUS / name).read_bytes()
    raw = raw.replace(b"{{TOKEN}}", TOKEN.encode()).replace(b"{{MESSAGE_ID}}", REQUEST_ID.encode())
    return_path = _header(raw, "Return-Path")
    envelope_sender = parseaddr(return_path)[1] if return_path is not None else None
    recipient = parseaddr(_header(raw, "To") or "")[1]
    if recipient != f"reply+{TOKEN}@mailgate.test":
        return Judgement("none", "bad-token", None)
    return judge(parse(raw, envelope_sender=envelope_sender), approver=APPROVER)


def _normalized(text: str | None) -> str:
    return " ".join((text or "").replace("\r\n", "\n").split())


def is_right(name: str, got: Judgement) -> bool:
    label = LABELS[name]
    if got.decision != label["decision"]:
        return False
    if label["why"] in JUDGED_CATEGORIES and got.why != label["why"]:
        return False
    return label["feedback"] is None or _normalized(label["feedback"]) in _normalized(got.reason)


@pytest.mark.parametrize("name", sorted(LABELS))
def test_case(name: str) -> None:
    got = outcome(name)
    assert is_right(name, got), f"{LABELS[name]['note']}: got {got}"


def test_scores_per_category_and_no_false_approvals() -> None:
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    false_approvals = []
    for name, label in sorted(LABELS.items()):
        got = outcome(name)
        category = str(label["why"])
        total[category] += 1
        right[category] += is_right(name, got)
        if got.decision == "approve" and label["decision"] != "approve":
            false_approvals.append(name)
    table = "\n".join(f"{c:<13} {right[c]:>3}/{total[c]:<3}" for c in sorted(total))
    summary = f"{table}\n{'all':<13} {sum(right.values()):>3}/{sum(total.values())}"
    print(f"\nreply corpus, per category:\n{summary}\nfalse approvals: {len(false_approvals)}")
    assert false_approvals == []
    assert right == total, summary


def test_the_copy_is_identical_to_the_shared_corpus() -> None:
    original = shared_file("replies")
    theirs = {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()}
    ours = {p.name: p.read_bytes() for p in CORPUS.iterdir() if p.is_file()}
    assert sorted(ours) == sorted(theirs)
    assert [name for name in ours if ours[name] != theirs[name]] == []
