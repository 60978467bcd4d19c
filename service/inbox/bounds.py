"""How much structure a reply may have before it is read at all.

The reply parser is the standard library's, which is correct but not built for hostile input:
its time grows with the number of MIME parts, and with nesting depth times lines (every line is
matched against the boundary of each enclosing part), so a few hundred kilobytes nested a few
hundred deep keep a thread busy for minutes. A person's reply is a text part, perhaps an HTML
one and a few attachments, nested three or four deep. So before the parser runs, one pass of C
regular expressions over the raw bytes bounds what it will be given, and a message past a bound
is refused whole with a permanent error that says which.

With these bounds and ``replies.PARSE_BYTES_MAX`` (the parser reads at most the first MiB), the
worst message they let through (10 MB, 32 multiparts deep, two-byte lines) parses in about 1.3 s
in a process that peaks at 61 MB, input included (tests/inbox/test_mime_bombs.py); without them,
3 MB nested 900 deep took 74 s, and 100,000 parts 22 s.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import unquote_to_bytes

HEADER_BYTES_MAX = 256 * 1024
"""A long real header section (a Received chain, DKIM and ARC signatures) is some 20 KiB."""
MULTIPARTS_MAX = 32
"""Distinct multipart boundaries declared: this bounds the nesting depth."""
PARTS_MAX = 1000
"""Boundary delimiter lines, so roughly the number of parts."""

#: ``boundary=`` and its RFC 2231 forms (``boundary*0=``: a delimiter starts with the first piece).
_BOUNDARY = re.compile(rb'boundary(?:\*\d*)?\*?\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))', re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def refusal(raw: bytes) -> str | None:
    """Why this message is too large in structure to read, or None."""
    end = _HEADER_END.search(raw, 0, HEADER_BYTES_MAX + 4)
    if end is None and len(raw) > HEADER_BYTES_MAX:
        return f"552 5.3.4 Message header larger than {HEADER_BYTES_MAX} bytes"
    boundaries: set[bytes] = set()
    for found in _BOUNDARY.finditer(raw):
        boundaries.add(_value(found.group(1) or found.group(2)))
        if len(boundaries) > MULTIPARTS_MAX:
            return f"554 5.6.0 Message nested too deeply (more than {MULTIPARTS_MAX} multiparts)"
    if boundaries:
        delimiters = re.compile(
            rb"^--(?:" + b"|".join(re.escape(b) for b in boundaries) + rb")", re.MULTILINE
        )
        seen = itertools.islice(delimiters.finditer(raw), PARTS_MAX + 1)
        if sum(1 for _ in seen) > PARTS_MAX:
            return f"554 5.6.0 Message has too many parts (more than {PARTS_MAX})"
    return None


def _value(declared: bytes) -> bytes:
    """An RFC 2231 value (``us-ascii'en'%41b``) as the parser will decode it."""
    if declared.count(b"'") >= 2:
        return unquote_to_bytes(declared.split(b"'", 2)[2])
    return declared
