"""Durations as people write them (``90s``, ``15m``, ``24h``, ``7d``), for settings and for the
``expires_in`` of a request alike; and rates as ``10/15m`` (ten per fifteen minutes)."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Durations are written ``90s``, ``15m``, ``24h``, ``7d`` (a bare number is seconds)."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        msg = f"{value!r} is not a duration like 90s, 15m, 24h or 7d"
        raise ValueError(msg)
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """A duration as it would be written: the largest unit that divides it (``7d``, ``90s``)."""
    millis = round(seconds * 1000)
    for unit in ("d", "h", "m", "s"):
        size = round(_UNIT_SECONDS[unit] * 1000)
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


class Rate(NamedTuple):
    """``count`` per ``per_s`` seconds."""

    count: int
    per_s: float

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.per_s)}"


def parse_rate(value: Any) -> Rate:
    """Rates are written ``10/15m``: a whole number, a slash, a duration."""
    if isinstance(value, Rate):
        return value
    count, slash, per = str(value).strip().partition("/")
    if not slash or not count.strip().isdigit() or int(count) < 1:
        msg = f"{value!r} is not a rate like 10/15m (a number of times per duration)"
        raise ValueError(msg)
    seconds = parse_duration(per)
    if seconds <= 0:
        msg = f"{value!r}: the duration after the slash must be longer than zero"
        raise ValueError(msg)
    return Rate(int(count), seconds)
