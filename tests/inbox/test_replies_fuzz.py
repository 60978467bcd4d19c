"""Random and mangled mail: `parse` never raises, garbage never decides, quotes never count."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.inbox.quotes import html_to_text, new_text
from service.inbox.replies import Reply, judge, parse
from service.inbox.verdicts import classify

ALICE = "alice@example.com"
CORPUS = sorted((Path(__file__).resolve().parent / "corpus").glob("*.eml"))
SAMPLES = [p.read_bytes().replace(b"{{TOKEN}}", b"t0k3n") for p in CORPUS]
ATTRIBUTION = "On Tue, Nov 24, 2026 at 10:02 AM Mailgate <mailgate@mailgate.test> wrote:"
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def well_formed(reply: Reply) -> None:
    """What every Reply promises, whatever came in."""
    assert reply.sender is None or (reply.sender.count("@") == 1 and reply.sender.strip())
    assert reply.sender is None or reply.sender == reply.sender.translate(
        str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    )
    assert all(isinstance(r, str) for r in reply.references)
    assert reply.verdict in {"approve", "reject", "unclear"}
    assert reply.reason is None or reply.verdict == "reject"
    judgement = judge(reply, approver=ALICE)
    if judgement.decision != "none":
        assert reply.auto is None
        assert reply.sender == ALICE
        assert judgement.decision == reply.verdict


def from_alice(body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"From: Alice Martin <{ALICE}>\r\nTo: reply+t0k3n@mailgate.test\r\n"
        f"Subject: Re: [Mailgate] Approve\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
    )
    return head.encode() + b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body


def base64_from_alice(text: str) -> bytes:
    encoded = base64.encodebytes(text.encode("utf-8", "surrogatepass"))
    head = (
        f"From: Alice Martin <{ALICE}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode() + encoded


def quoted(text: str) -> str:
    lines = re.split(r"\r\n|\r|\n", text)
    return ATTRIBUTION + "\n" + "\n".join(f"> {line}" for line in lines) + "\n"


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A corpus message with a few bytes cut, repeated, inserted, flipped or dropped."""
    raw = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(raw)))
        end = draw(st.integers(at, min(len(raw), at + 400)))
        kind = draw(st.sampled_from(["cut", "drop", "repeat", "insert", "flip", "boundary"]))
        if kind == "cut":
            del raw[at:]
        elif kind == "drop":
            del raw[at:end]
        elif kind == "repeat":
            raw[at:at] = raw[at:end] * draw(st.integers(1, 20))
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "flip" and at < len(raw):
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "boundary":
            raw[at:at] = b"\r\n--" + draw(st.binary(max_size=12)) + b"\r\nContent-Type: text/"
    return bytes(raw)


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from([None, "", "<>", ALICE]))
def test_random_bytes_never_raise_and_never_decide(raw: bytes, envelope: str | None) -> None:
    reply = parse(raw, envelope_sender=envelope)
    well_formed(reply)
    assert judge(reply, approver=ALICE).decision == "none"


@FUZZ
@given(mangled())
def test_mangled_mime_never_raises(raw: bytes) -> None:
    well_formed(parse(raw))


@FUZZ
@given(
    st.binary(max_size=2048),
    st.sampled_from(
        [
            "text/plain; charset=utf-8",
            "text/plain; charset=iso-8859-1; format=flowed; delsp=yes",
            "text/plain; charset=bogus",
            "text/plain",
            "text/html; charset=windows-1252",
        ]
    ),
)
def test_garbage_from_the_approver_never_decides(garbage: bytes, content_type: str) -> None:
    reply = parse(from_alice(b"\x01" + garbage, content_type))
    well_formed(reply)
    assert reply.verdict == "unclear"
    assert judge(reply, approver=ALICE).decision == "none"


@FUZZ
@given(st.text(max_size=400))
def test_whatever_the_quote_says_decides_nothing(text: str) -> None:
    reply = parse(base64_from_alice(quoted(text)))
    assert reply.text == ""
    assert judge(reply, approver=ALICE).why == "unclear"


@FUZZ
@given(st.text(max_size=400))
def test_the_quote_never_changes_a_decision(text: str) -> None:
    assert judge(parse(base64_from_alice("Yes\n\n" + quoted(text))), approver=ALICE).decision == (
        "approve"
    )
    rejection = parse(base64_from_alice("No, the team plan is wrong.\n\n" + quoted(text)))
    assert judge(rejection, approver=ALICE).reason == "the team plan is wrong."


@FUZZ
@given(
    st.lists(st.sampled_from(["price", "plan", "Team", "is", "wrong", "SSO", "$89"]), min_size=1)
)
def test_the_whole_reason_after_no_is_kept(words: list[str]) -> None:
    reason = " ".join(words)
    assert classify(f"No - {reason}") == ("reject", reason)
    assert classify(f"Nope.\n\n{reason}") == ("reject", reason)


@FUZZ
@given(st.text(max_size=600))
def test_classify_accepts_any_text(text: str) -> None:
    verdict, reason = classify(text)
    assert verdict in {"approve", "reject", "unclear"}
    assert reason is None or (verdict == "reject" and reason.strip())


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("<>/=\"' abcdiv pblockquote\n&;#x0-")), max_size=600))
def test_html_to_text_accepts_any_markup(markup: str) -> None:
    assert isinstance(html_to_text(markup), str)


@FUZZ
@given(st.text(max_size=600))
def test_new_text_only_keeps_unquoted_lines_of_the_body(body: str) -> None:
    kept = new_text(body)
    lines = {line.strip() for line in body.replace("\r\n", "\n").replace("\r", "\n").split("\n")}
    for line in filter(str.strip, kept.split("\n")):
        assert line.strip() in lines
        assert not line.lstrip().startswith(">")
