"""Every benchmark in one run, one table: ``python -m bench [--full]``.

Runs the engine, reply listener, ledger, load, scrape and (where Postgres can be started)
scale-out benchmarks one after the other through their own ``measure``/``run`` functions, and
prints one table of the ratios and percentiles that matter, each measured in this run, with the
machine's facts. Quick sizes by default (~2 min on 2 cores); ``--full`` uses the sizes the
README's tables were measured with (not timed as a whole; ~10 min by its parts).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import engine, inbox, ledger, load, scale_out, scrape
from bench.ledger import percentile


@dataclass(frozen=True)
class Sizes:
    engine_n: int
    engine_runs: int
    engine_backlog: int
    inbox_replies: int
    ledger_backlog: int
    ledger_pending: int
    load_requests: int
    scrape_pages: int
    scale_out_requests: int


QUICK = Sizes(300, 3, 2_000, 50, 1_000, 300, 200, 8, 40)
FULL = Sizes(500, 5, 10_000, 200, 10_000, 3_000, 1_000, 20, 200)

Row = tuple[str, str, str, str]


def machine() -> str:
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {memory_gb:.0f} GB RAM, "
        f"{platform.system()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {datetime.date.today().isoformat()}"
    )


def engine_rows(sizes: Sizes) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
    try:
        m = engine.measure(work, sizes.engine_n, sizes.engine_runs, sizes.engine_backlog)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local, durable = statistics.median(m["local"]), statistics.median(m["durable"])
    loaded = statistics.median(m["backlog"])
    restart = statistics.median(m["restart_crash"]["ready_s"])
    return [
        ("engine", "durable / in-memory, workflows/s", f"{durable / local:.2f}", "≥ 0.75"),
        (
            "engine",
            f"backlog ({sizes.engine_backlog:,} suspended) / empty, workflows/s",
            f"{loaded / durable:.2f}",
            "≥ 0.8",
        ),
        ("engine", "cold restart after SIGKILL with that backlog, s", f"{restart:.2f}", "< 1"),
    ]


def inbox_rows(sizes: Sizes) -> list[Row]:
    m = asyncio.run(inbox.measure(sizes.inbox_replies))
    return [
        ("inbox", "reply accepted → workflow complete, p50 ms", f"{m['p50_ms']:.1f}", "< 20"),
        ("inbox", "reply accepted → workflow complete, p99 ms", f"{m['p99_ms']:.1f}", "< 100"),
        ("inbox", "replies/s, 10 concurrent SMTP clients", f"{m['accepted_per_s']:.0f}", ""),
    ]


def ledger_rows(sizes: Sizes) -> list[Row]:
    m = asyncio.run(ledger.measure(sizes.ledger_backlog, sizes.ledger_pending))
    split, waiting = m["split"], f"{sizes.ledger_backlog:,} waiting"
    rows: list[Row] = []
    for name, key in (("POST /requests", "post"), ("GET /requests?state=waiting", "listing")):
        values = split[key]
        rows.append(
            (
                "ledger",
                f"split roles, {waiting}: {name} p50 / p99 ms",
                f"{statistics.median(values):.1f} / {percentile(values, 0.99):.1f}",
                "",
            )
        )
    ratio = m["empty_s"] / m["loaded_s"]
    rows.append(
        (
            "ledger",
            f"30-request cycle, {sizes.ledger_pending:,} waiting / empty, requests/s",
            f"{ratio:.2f}",
            "",
        )
    )
    return rows


def load_rows(sizes: Sizes) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(load.run(sizes.load_requests, 20, data=Path(tmp)))
    what = f"{sizes.load_requests:,} waiting, 20 clients"
    return [
        ("load", f"{what}: decisions/s", f"{result.decisions_per_s:.1f}", ""),
        (
            "load",
            f"{what}: decision → complete p50 / p99 ms",
            f"{result.p50_ms:.0f} / {result.p99_ms:.0f}",
            "",
        ),
        ("load", f"{what}: requests lost or decided twice", str(len(result.problems)), "0"),
    ]


def scrape_rows(sizes: Sizes) -> list[Row]:
    result = asyncio.run(scrape.run(sizes.scrape_pages))
    return [
        ("scrape", "pooled browser, per page p50 ms", f"{result.pooled_median_s * 1000:.0f}", ""),
        (
            "scrape",
            "new Chromium per URL, per page p50 ms",
            f"{result.per_url_median_s * 1000:.0f}",
            "",
        ),
        ("scrape", "per URL / pooled, per page", f"{result.ratio:.1f}", "≥ 3"),
    ]


def scale_out_rows(sizes: Sizes) -> list[Row]:
    results = asyncio.run(scale_out.measure(sizes.scale_out_requests, 20, [1]))
    embedded, postgres = results[0], results[1]
    return [
        (
            "scale out",
            "Postgres (1 worker) / embedded, end-to-end requests/s",
            f"{postgres['rps'] / embedded['rps']:.2f}",
            "",
        )
    ]


BENCHES: dict[str, Callable[[Sizes], list[Row]]] = {
    "engine": engine_rows,
    "inbox": inbox_rows,
    "ledger": ledger_rows,
    "load": load_rows,
    "scrape": scrape_rows,
    "scale_out": scale_out_rows,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the README's sizes")
    parser.add_argument(
        "--only",
        default=",".join(BENCHES),
        help=f"a comma-separated subset of {', '.join(BENCHES)}",
    )
    args = parser.parse_args(argv)
    sizes = FULL if args.full else QUICK
    rows: list[Row] = []
    failed: list[str] = []
    for name in args.only.split(","):
        started = time.perf_counter()
        print(f"running {name} …", file=sys.stderr, flush=True)
        try:
            rows += BENCHES[name](sizes)
        except Exception as exc:  # one bench failing must not hide the others' numbers
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"Machine: {machine()}")
    print(f"Command: python -m bench{' --full' if args.full else ''}; sizes: {sizes}")
    print("\n| bench | measurement | result | target |\n|---|---|---:|---:|")
    for bench, measurement, value, target in rows:
        print(f"| {bench} | {measurement} | {value} | {target} |")
    for failure in failed:
        print(f"\nfailed: {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
