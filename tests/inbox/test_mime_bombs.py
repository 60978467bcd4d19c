"""MIME bombs: deep nesting, thousands of parts, a huge base64 line. Each is refused whole, with
a permanent error that names the bound, before the parser sees it; and the worst message the
bounds let through is parsed in bounded time and memory."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

from replying import ALICE, Wire, waiting_for_alice
from support import wait_for_state

from service.inbox import bounds


def _head(reply_to: str, content_type: str) -> bytes:
    return (
        f"From: Alice <{ALICE}>\r\nTo: {reply_to}\r\nSubject: Re: approve\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n"
    ).encode()


def nested(reply_to: str, depth: int, filler_lines: int = 0) -> bytes:
    """``depth`` multiparts, each the first part of the one around it, "Yes" at the bottom."""
    parts = [_head(reply_to, 'multipart/mixed; boundary="b0"'), b"--b0\r\n"]
    for level in range(1, depth):
        parts.append(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
        )
    parts.append(b"Content-Type: text/plain\r\n\r\nYes\r\n" + b"x\r\n" * filler_lines)
    parts.extend(b"--b%d--\r\n" % level for level in reversed(range(depth)))
    return b"".join(parts)


def many_parts(reply_to: str, count: int) -> bytes:
    parts = [_head(reply_to, 'multipart/mixed; boundary="B"')]
    parts.append(b"--B\r\nContent-Type: text/plain\r\n\r\nYes\r\n")
    parts.extend(b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(count - 1))
    parts.append(b"--B--\r\n")
    return b"".join(parts)


def with_attachment(reply_to: str, attachment: bytes, line_length: int) -> bytes:
    encoded = base64.b64encode(attachment)
    lines = b"\r\n".join(encoded[i : i + line_length] for i in range(0, len(encoded), line_length))
    return (
        _head(reply_to, 'multipart/mixed; boundary="B"')
        + b"--B\r\nContent-Type: text/plain\r\n\r\nYes, approved.\r\n"
        + b"--B\r\nContent-Type: application/octet-stream\r\n"
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + lines
        + b"\r\n--B--\r\n"
    )


async def _send(port: int, reply_to: str, message: bytes) -> tuple[int, str, float]:
    wire = await Wire.open(port)
    await wire.hello()
    started = time.perf_counter()
    code, text = await wire.deliver(ALICE, reply_to, message + b".\r\n")
    elapsed = time.perf_counter() - started
    await wire.close()
    return code, text, elapsed


async def test_bombs_are_refused_whole_and_decide_nothing(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    to = waiting.reply_to
    bombs = {
        "nested 200 deep": (
            nested(to, 200),
            (554, "5.6.0 Message nested too deeply (more than 32 multiparts)"),
        ),
        "5,000 parts": (
            many_parts(to, 5000),
            (554, "5.6.0 Message has too many parts (more than 1000)"),
        ),
        "a 1 MB base64 line": (
            with_attachment(to, b"\0" * 750_000, 1_000_000),
            (500, "Line too long (see RFC5321 4.5.3.1.6)"),
        ),
    }
    for name, (bomb, answer) in bombs.items():
        code, text, elapsed = await _send(waiting.port, to, bomb)
        assert (code, text) == answer, name
        assert elapsed < 2, name
    assert await waiting.state() == "waiting"
    assert await waiting.decisions() == []

    attached = with_attachment(to, bytes(range(256)) * 24_000, 76)
    code, _, elapsed = await _send(waiting.port, to, attached)
    assert code == 250, "a 6 MB attachment under the text is read past quickly"
    assert elapsed < 3
    await wait_for_state(waiting.mailgate.client, waiting.request_id, "approved")


MEASURE = r"""
import re, sys, time
from pathlib import Path
from service.inbox.replies import parse
raw = Path(sys.argv[1]).read_bytes()
started = time.perf_counter()
reply = parse(raw)
elapsed = time.perf_counter() - started
# VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's (here, pytest's).
peak = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(reply.verdict, elapsed, int(peak) * 1024)
"""


def test_the_worst_message_the_bounds_let_through_is_parsed_in_bounded_time_and_memory(
    tmp_path: Path,
):
    """32 multiparts deep with a 10 MB body of two-byte lines (the parser's slowest shape, as
    every line is matched against each enclosing boundary), and 1,000 delimiters; each parsed
    in a fresh process, whose peak memory (10 MB of input included) is all its own."""
    deep = nested("reply+t@mailgate.test", bounds.MULTIPARTS_MAX, filler_lines=3_300_000)
    wide = many_parts("reply+t@mailgate.test", bounds.PARTS_MAX - 1)
    for name, raw in (("deep", deep), ("wide", wide)):
        assert bounds.refusal(raw) is None, name
        (tmp_path / name).write_bytes(raw)
        measured = subprocess.run(
            [sys.executable, "-c", MEASURE, str(tmp_path / name)], capture_output=True, check=True
        )
        verdict, elapsed, peak = measured.stdout.decode().split()
        print(f"{name}: {len(raw):,} bytes parsed in {float(elapsed):.2f} s, "
              f"the process peaked at {int(peak) / 1e6:.0f} MB")  # fmt: skip
        assert verdict == "approve", name
        assert float(elapsed) < 5, name
        assert int(peak) < 100e6, name


def test_bounds_read_boundaries_as_the_parser_does():
    declared = [b'Content-Type: multipart/mixed; boundary="q%d"' % n for n in range(20)] + [
        b"Content-Type: multipart/mixed; boundary*=us-ascii''r%d" % n for n in range(20)
    ]
    assert "nested too deeply" in (bounds.refusal(b"\r\n".join(declared) + b"\r\n\r\n") or "")
    parts = (
        b"Content-Type: multipart/mixed; boundary*=us-ascii'en'%41b\r\n\r\n" + b"--Ab\r\n" * 1001
    )
    assert "too many parts" in (bounds.refusal(parts) or "")
    assert bounds.refusal(b"--Ab\r\n" * 5000) is None, "lines like delimiters, but no multipart"
    head = b"X-Filler: " + b"a" * 900 + b"\r\n"
    assert bounds.refusal(head * 300 + b"\r\nYes\r\n") == (
        "552 5.3.4 Message header larger than 262144 bytes"
    )
    assert bounds.refusal(head * 250 + b"\r\nYes\r\n") is None
