"""Backlog benchmark: one embedded engine holding ``--backlog`` pending approvals.

The backlog is built straight through the engine (no HTTP, no SMTP, no summarizer), but with
the durable shape a Mailgate request has while it waits since deadlines: the root promise and
its task (through ``Ledger.start``, as the gateway starts a request), a summarize step and an
ask step that append ``fetched``, ``summarized`` and ``asked`` to the audit trail through the
real ``Ledger``, the round's promise the workflow suspends on, and the round's deadline watcher
(a detached workflow that checkpoints the clock and sleeps until the deadline on a
``resonate:timer`` promise). That is 11 promises and 3 tasks per waiting request, as a real
``mailgate serve`` holds them.

Measured, each in a fresh child process:

* requests/s through a full cycle (submit → asked → decided → watcher stopped → finished),
  with an empty engine and with the backlog loaded; their ratio;
* cold restart to ready after SIGKILL and after a clean stop;
* peak RSS of the process holding the backlog, idle and after the loaded cycle;
* the rows the engine writes per second while the backlog sits idle (timers, leases).

Usage: ``python bench/backlog.py [--backlog 100000] [--n 300] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from resonate.context import Context
from resonate.resonate import Resonate
from resonate.retry import Never

from service import rounds
from service.domain import WORKER_GROUP, WORKFLOW_NAME, Deadline, Decision, Request, workflow_id
from service.engine import EngineConnection, open_durable
from service.ledger import Ledger

IN_FLIGHT = 50
SECRET = "bench-secret-0123456789abcdef"
PID = "bench-worker"
DEADLINE = Deadline(expires_in_ms=7 * 86_400_000, remind_after_ms=0, remind_every_ms=0)
WATCHER = "mailgate.deadline"
SUMMARY = (
    "Tide pools are rocky hollows that keep sea water when the tide goes out. They shelter "
    "anemones, sea stars and small fish, which must survive heat and salt. Visitors should step "
    "only on bare rock and never lift animals out of the water."
)
asked: dict[str, asyncio.Future[str]] = {}
finished: dict[str, asyncio.Future[None]] = {}


def ledger_of(ctx: Context) -> Ledger:
    return ctx.get_dependency(Ledger)


async def summarize_step(ctx: Context, request_id: str) -> dict[str, Any]:
    ledger = ledger_of(ctx)
    await ledger.append(request_id, "fetched", {"chars": 4096}, key="fetched")
    summary = {"text": SUMMARY, "summarizer": "extractive", "model": "textrank"}
    await ledger.append(request_id, "summarized", {"round": 1, **summary}, key="summarized:1")
    return summary


async def ask_step(ctx: Context, request_id: str, round_id: str, approver: str) -> dict[str, Any]:
    ledger = ledger_of(ctx)
    now = time.time_ns() // 1_000_000
    data = {
        "round": 1,
        "round_id": round_id,
        "channel": "smtp",
        "recipient": approver,
        "message_id": f"<{round_id}@mailgate.test>",
        "recipients": [approver],
        "message_ids": {approver: f"<{round_id}@mailgate.test>"},
        "asked_at": now,
        "deadline_at": now + DEADLINE.expires_in_ms,
    }
    await ledger.append(request_id, "asked", data, key="asked:1")
    return data


async def decided_step(
    ctx: Context, request_id: str, round_id: str, decision: dict[str, Any]
) -> dict[str, Any]:
    data = rounds.decided(1, round_id, Decision.from_value(decision))
    await ledger_of(ctx).append(request_id, "decided", data, key=f"decided:{round_id}")
    return decision


async def stop_watcher_step(ctx: Context, watcher_id: str) -> dict[str, Any]:
    await ledger_of(ctx).stop_watcher(watcher_id)
    return {"stopped": watcher_id}


async def finish_step(ctx: Context, request_id: str) -> dict[str, Any]:
    data = {"state": "approved", "detail": "approver@example.com"}
    await ledger_of(ctx).append(request_id, "finished", data, key="finished")
    waiter = finished.get(request_id)
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
    return {"state": "approved"}


async def approval(ctx: Context, submitted: dict[str, Any]) -> dict[str, Any]:
    """``service.workflow.approval``'s durable calls for one round decided by its approver."""
    request_id = ctx.info.id
    request = Request.from_value(submitted)
    await ctx.run(summarize_step, request_id)
    decision = ctx.promise(timeout=timedelta(days=365))
    round_id = await decision.id()
    data = await ctx.run(ask_step, request_id, round_id, request.approver)
    watcher = await ctx.options(timeout=timedelta(days=8)).detached(
        WATCHER, request_id, round_id, int(data["asked_at"]), DEADLINE.to_value()
    )
    waiter = asked.get(request_id)
    if waiter is not None and not waiter.done():
        waiter.set_result(round_id)
    value = await decision
    await ctx.run(decided_step, request_id, round_id, value)
    await ctx.run(stop_watcher_step, watcher)
    return await ctx.run(finish_step, request_id)


async def clock_step(ctx: Context) -> int:
    return time.time_ns() // 1_000_000


async def deadline(
    ctx: Context, request_id: str, round_id: str, asked_at: int, schedule: dict[str, Any]
) -> dict[str, Any]:
    """``service.workflow.deadline`` without reminders: checkpoint the clock, sleep to the end."""
    now = await ctx.run(clock_step)
    deadline_at = asked_at + int(schedule["expires_in_ms"])
    await ctx.sleep(timedelta(milliseconds=max(deadline_at - now, 1)))
    return {"round_id": round_id, "deadline_at": deadline_at}


def build(conn: EngineConnection) -> tuple[Resonate, Ledger]:
    resonate = Resonate(
        network=conn,
        sources=[conn],
        group=WORKER_GROUP,
        pid=PID,
        env={},
        ttl=timedelta(seconds=60),
        subscription_refresh_secs=0,
    )
    ledger = Ledger(resonate, secrets=(SECRET,), clock=lambda: time.time_ns() // 1_000_000)
    resonate.with_dependency(ledger)
    resonate.register(approval, name=WORKFLOW_NAME, version=2, retry_policy=Never())
    resonate.register(deadline, name=WATCHER, version=1, retry_policy=Never())
    return resonate, ledger


def new_request(tag: str, n: int) -> tuple[str, Request]:
    now = time.time_ns() // 1_000_000
    approver = f"approver{n % 97}@example.com"
    url = f"https://example.com/{tag}/{n}"
    request = Request(url, (approver,), None, now, "bench", None, f"{tag}-{n}", DEADLINE)
    return workflow_id(url, approver), request


async def submit(ledger: Ledger, tag: str, n: int) -> str:
    request_id, request = new_request(tag, n)
    waiter = asked[request_id] = asyncio.get_running_loop().create_future()
    await ledger.start(request_id, request, timeout=timedelta(days=365), version=2)
    try:
        return await waiter
    finally:
        del asked[request_id]


async def cycle(ledger: Ledger, tag: str, n: int) -> None:
    """One request from submission to its finished record, decided as soon as it is asked."""
    request_id, _ = new_request(tag, n)
    done = finished[request_id] = asyncio.get_running_loop().create_future()
    try:
        round_id = await submit(ledger, tag, n)
        decision = Decision.new("approve", None, "approver@example.com", "link", 0)
        await ledger.settle_round(round_id, decision)
        await done
    finally:
        del finished[request_id]


async def gated(count: int, one: Any) -> float:
    """Run ``one(i)`` for ``i < count``, ``IN_FLIGHT`` at a time; return the rate per second."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def run(i: int) -> None:
        async with gate:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(count)))
    return count / (time.perf_counter() - started)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def timers_settled(conn: EngineConnection, count: int) -> None:
    """Wait until ``count`` deadline watchers sleep on their timer promise."""
    while True:
        sleeping = len(conn._state.promises.with_tag("resonate:timer", "true"))
        if sleeping >= count:
            return
        await asyncio.sleep(0.5)


async def child_build(data_dir: Path, count: int) -> None:
    """Build ``count`` waiting requests, say so, and wait to be killed."""
    conn = open_durable(data_dir, pid=PID, group=WORKER_GROUP)
    await conn.start()
    _, ledger = build(conn)
    rate = await gated(count, lambda i: submit(ledger, "held", i))
    await timers_settled(conn, count)
    print(json.dumps({"built_per_s": rate, "rss_mb": rss_mb()}), flush=True)
    await asyncio.Event().wait()


async def child_cycle(data_dir: Path, n: int, idle_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    conn = open_durable(data_dir, pid=PID, group=WORKER_GROUP)
    await conn.start()
    ready_s = time.perf_counter() - started
    resonate, ledger = build(conn)
    loaded_rss = rss_mb()
    rows_before = rows_written(conn)
    await asyncio.sleep(idle_s)
    idle_rows = (rows_written(conn) - rows_before) / idle_s
    await gated(20, lambda i: cycle(ledger, "warm", i))
    rate = await gated(n, lambda i: cycle(ledger, "wf", i))
    promises = len(conn._state.promises)
    await resonate.stop()
    await conn.stop()
    return {
        "per_s": rate,
        "ready_s": ready_s,
        "loaded_rss_mb": loaded_rss,
        "peak_rss_mb": peak_rss_mb(),
        "idle_rows_per_s": idle_rows,
        "promises": promises,
        "db_mb": (data_dir / "engine.sqlite3").stat().st_size / 2**20,
    }


async def child_restart(data_dir: Path, freeze: bool) -> dict[str, Any]:
    started = time.perf_counter()
    conn = open_durable(data_dir, pid="restart", group=WORKER_GROUP)
    await conn.start()
    if freeze:
        gc.freeze()
    ready_s = time.perf_counter() - started
    out = {"ready_s": ready_s, "since_exec_s": seconds_since_exec(), "rss_mb": rss_mb()}
    await conn.stop()
    out["stop_s"] = time.perf_counter() - started - ready_s
    return out


def rows_written(conn: EngineConnection) -> int:
    """Rows the engine inserted, updated or deleted so far (SQLite's own counter)."""
    return conn._state.db.connection.total_changes


def seconds_since_exec() -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    return float(Path("/proc/uptime").read_text().split()[0]) - started


def child(argv: list[str]) -> None:
    what, data_dir = argv[0], Path(argv[1])
    if what == "build":
        asyncio.run(child_build(data_dir, int(argv[2])))
        return
    if what == "cycle":
        out = asyncio.run(child_cycle(data_dir, int(argv[2]), float(argv[3])))
    else:
        out = asyncio.run(child_restart(data_dir, argv[2] == "freeze"))
    print(json.dumps(out), flush=True)


def spawn(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "_child", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_backlog(data_dir: Path, count: int) -> dict[str, Any]:
    """Build ``count`` waiting requests in a child, then SIGKILL it (no clean stop)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "_child", "build", str(data_dir), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    started = time.perf_counter()
    line = proc.stdout.readline()
    built = json.loads(line) | {"build_s": time.perf_counter() - started}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before the cycle")
    parser.add_argument("--keep", type=Path, help="build the backlog here once and reuse it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailgate-backlog-"))
    try:
        report(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(work: Path, args: argparse.Namespace) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}; backlog {args.backlog:,}, "
        f"cycle N={args.n}, {IN_FLIGHT} in flight, median of {args.runs} runs",
        flush=True,
    )
    base = args.keep or work / "base"
    if (base / "engine.sqlite3").exists():
        built: dict[str, Any] = {"built_per_s": float("nan"), "rss_mb": float("nan"), "build_s": 0}
    else:
        built = build_backlog(base, args.backlog)
    print(f"built: {json.dumps(built)}", flush=True)
    empty, loaded, crashed, clean = [], [], [], []
    for run in range(args.runs):
        empty.append(spawn("cycle", str(work / f"e{run}"), str(args.n), str(args.idle)))
        copy = work / f"b{run}"
        shutil.copytree(base, copy)
        crashed.append(spawn("restart", str(copy), "plain"))
        clean.append(spawn("restart", str(copy), "plain"))
        loaded.append(spawn("cycle", str(copy), str(args.n), str(args.idle)))
        shutil.rmtree(copy)
        raw = [empty[-1], crashed[-1], clean[-1], loaded[-1]]
        print(f"run {run}: {json.dumps(raw)}", flush=True)

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    rows = [
        ("empty engine, requests/s (full cycle)", med(empty, "per_s")),
        (f"{args.backlog:,} waiting, requests/s (full cycle)", med(loaded, "per_s")),
        ("  ratio backlog/empty (target >= 0.8)", med(loaded, "per_s") / med(empty, "per_s")),
        ("restart after SIGKILL to ready, s (target < 3)", med(crashed, "ready_s")),
        ("  same, from process exec, s", med(crashed, "since_exec_s")),
        ("restart after clean stop to ready, s", med(clean, "ready_s")),
        ("clean stop (checkpoint), s", med(crashed, "stop_s")),
        ("RSS after restart with the backlog, MB", med(crashed, "rss_mb")),
        ("peak RSS, backlog + cycle, MB (target < 1024)", med(loaded, "peak_rss_mb")),
        ("peak RSS, empty + cycle, MB", med(empty, "peak_rss_mb")),
        ("rows written/s while idle, backlog", med(loaded, "idle_rows_per_s")),
        ("rows written/s while idle, empty", med(empty, "idle_rows_per_s")),
        ("building: requests/s to waiting", built["built_per_s"]),
        ("building: RSS of the builder at the end, MB", built["rss_mb"]),
    ]
    for label, value in rows:
        print(f"{label:<52} {value:>10.2f}")
    print(f"database size, MB: {(base / 'engine.sqlite3').stat().st_size / 2**20:.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
    else:
        main()
