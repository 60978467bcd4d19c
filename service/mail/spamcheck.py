"""SpamAssassin's opinion of a message: for ``mailgate mail-test``, and for the tests that keep
every kind of email Mailgate sends far below any spam threshold.

Debian's ``spamassassin`` runs with local tests only (``-L``: no blocklists, no DNS) in test
mode (``-t``), which appends a report naming each rule that fired. It creates no preference file
and uses no Bayes database, so checking a message changes nothing on the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

PROGRAM = "spamassassin"
ARGUMENTS = ("-L", "-t", "-x", "--cf=use_bayes 0")
TIMEOUT_S_DEFAULT = 120.0

_SUMMARY = re.compile(r"^Content analysis details:\s+\((-?[\d.]+) points, (-?[\d.]+) required\)")
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")
_CONTINUATION = re.compile(r"^\s{20,}(\S.*)$")


class SpamCheckError(RuntimeError):
    """SpamAssassin ran but gave no report to read."""


@dataclass(frozen=True)
class Hit:
    rule: str
    points: float
    description: str


@dataclass(frozen=True)
class SpamReport:
    score: float
    required: float
    hits: tuple[Hit, ...]

    def describe(self) -> str:
        head = f"SpamAssassin (local rules): {self.score:.1f} points ({self.required:.1f} is spam)"
        lines = [head]
        lines += [f"  {h.points:5.1f} {h.rule:<24} {h.description}" for h in self.hits]
        return "\n".join(lines)


def spamassassin() -> str | None:
    """The program's path, or None when it is not installed."""
    return shutil.which(PROGRAM)


def score(
    data: bytes, *, program: str = PROGRAM, timeout_s: float = TIMEOUT_S_DEFAULT
) -> SpamReport:
    """Score a whole message (headers and body, as sent). SpamAssassin makes a
    ``~/.spamassassin`` whatever its flags say, so it runs with a home of its own that is
    thrown away: checking a sample leaves nothing in the operator's home."""
    with tempfile.TemporaryDirectory(prefix="mailgate-spamcheck-") as home:
        done = subprocess.run(  # noqa: S603 (a fixed program with fixed arguments)
            [program, *ARGUMENTS],
            input=data,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "HOME": home},
        )
    return parse_report(done.stdout.decode("utf-8", "replace"), problem=done.stderr.decode())


def parse_report(output: str, *, problem: str = "") -> SpamReport:
    """Read the report ``spamassassin -t`` appends to the message."""
    lines = output.splitlines()
    found = [(i, m) for i, line in enumerate(lines) if (m := _SUMMARY.match(line))]
    if not found:
        msg = f"spamassassin gave no report: {problem.strip()[-300:] or 'no output'}"
        raise SpamCheckError(msg)
    start, summary = found[-1]
    hits: list[Hit] = []
    table = next((i for i in range(start, len(lines)) if lines[i].startswith("----")), len(lines))
    for line in lines[table + 1 :]:
        if rule := _RULE.match(line):
            hits.append(Hit(rule.group(2), float(rule.group(1)), rule.group(3).strip()))
        elif (more := _CONTINUATION.match(line)) and hits:
            last = hits[-1]
            hits[-1] = Hit(last.rule, last.points, f"{last.description} {more.group(1).strip()}")
        elif line.strip():
            break
    return SpamReport(float(summary.group(1)), float(summary.group(2)), tuple(hits))
