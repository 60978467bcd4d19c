"""Engine benchmark: durable SQLite engine vs the SDK's in-memory ``LocalConnection``.

One workflow shape throughout (start → step → suspend on a promise → resolve → complete), N of
them with 50 in flight, each configuration measured in fresh processes and reported as the median
of ``--runs`` runs:

* workflows/s on stock ``LocalConnection``, on the durable engine (``synchronous=FULL``), ratio;
* the durable throughput again with 10,000 other workflows suspended, as a ratio to the empty case;
* cold restart to ready with those 10,000 suspended (after SIGKILL, and after a clean stop);
* peak RSS of a process holding them;
* database size per 1,000 completed workflows, kept and after retention.

Usage: ``python bench/engine.py [--n 500] [--runs 5] [--backlog 10000]``. Every measurement runs
in a child process (``python bench/engine.py _child ...``) so memory and caches do not leak from
one into the next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from resonate.connections import LocalConnection
from resonate.context import Context
from resonate.resonate import Resonate
from resonate.types import Value

from service.engine import EngineConnection, open_durable
from service.engine.rows import Database
from service.engine.store import Opened, SqliteStore

IN_FLIGHT = 50
GROUP = "bench"
PID = "bench-1"
announced: dict[str, asyncio.Future[str]] = {}


def step(ctx: Context, n: int) -> int:
    return n + 1


async def flow(ctx: Context, n: int) -> int:
    value = await ctx.run(step, n)
    decision = ctx.promise(timeout=timedelta(days=7))
    promise_id = await decision.id()
    waiter = announced.get(ctx.info.id)
    if waiter is not None and not waiter.done():
        waiter.set_result(promise_id)
    return value + await decision


def build(network: Any) -> Resonate:
    resonate = Resonate(network=network, group=GROUP, pid=PID, env={}, subscription_refresh_secs=0)
    resonate.register(flow)
    return resonate


async def one(resonate: Resonate, workflow_id: str, resolve: bool) -> None:
    waiter = announced[workflow_id] = asyncio.get_running_loop().create_future()
    handle = resonate.options(timeout=timedelta(days=30)).run(workflow_id, flow, 1)
    promise_id = await waiter
    del announced[workflow_id]
    if resolve:
        await resonate.promises.resolve(promise_id, Value(data=1))
        assert await handle.result() == 3


async def drive(resonate: Resonate, prefix: str, n: int, resolve: bool = True) -> float:
    """Run ``n`` workflows, ``IN_FLIGHT`` at a time; return workflows per second."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def gated(i: int) -> None:
        async with gate:
            await one(resonate, f"{prefix}-{i}", resolve)

    started = time.perf_counter()
    await asyncio.gather(*(gated(i) for i in range(n)))
    return n / (time.perf_counter() - started)


class TimedDatabase(Database):
    """Measures how long each group commit holds the event loop."""

    commits_s: list[float]

    def commit(self) -> None:
        started = time.perf_counter()
        super().commit()
        self.commits_s.append(time.perf_counter() - started)


class TimedStore(SqliteStore):
    """A store whose state commits through a ``TimedDatabase``."""

    database: TimedDatabase

    def open(self) -> Opened:
        opened = super().open()
        self.database = TimedDatabase(opened.state.db.connection)
        self.database.commits_s = []
        opened.state.db = self.database
        return opened


async def open_network(kind: str, data_dir: Path) -> Any:
    if kind == "local":
        return LocalConnection(pid=PID, group=GROUP)
    conn = EngineConnection(
        TimedStore(data_dir, synchronous=kind.split(":")[1]), pid=PID, group=GROUP
    )
    await conn.start()
    return conn


async def child_throughput(kind: str, data_dir: Path, n: int) -> dict[str, Any]:
    network = await open_network(kind, data_dir)
    resonate = build(network)
    await drive(resonate, "warm", 20)
    store = getattr(network, "_store", None)
    if store is not None:
        store.database.commits_s.clear()
    started = time.perf_counter()
    rate = await drive(resonate, "wf", n)
    wall = time.perf_counter() - started
    await resonate.stop()
    await network.stop()
    if store is None:
        return {"wf_per_s": rate}
    commits = sorted(store.database.commits_s)
    return {
        "wf_per_s": rate,
        "commits": len(commits),
        "commit_ms_median": statistics.median(commits) * 1000,
        "commit_ms_p99": commits[int(len(commits) * 0.99)] * 1000,
        "loop_blocked_pct": 100 * sum(commits) / wall,
    }


async def child_backlog(data_dir: Path, n: int) -> None:
    """Build ``n`` suspended workflows, say so, and wait to be killed."""
    network = await open_network("durable:FULL", data_dir)
    resonate = build(network)
    rate = await drive(resonate, "held", n, resolve=False)
    print(json.dumps({"built_wf_per_s": rate}), flush=True)
    await asyncio.Event().wait()


async def child_restart(data_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    conn = open_durable(data_dir, pid="restart", group=GROUP)
    await conn.start()
    ready_s = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    since_exec_s = seconds_since_exec()
    await conn.stop()
    return {"ready_s": ready_s, "since_exec_s": since_exec_s, "peak_rss_mb": rss_mb}


def seconds_since_exec() -> float:
    """Time since this process started (interpreter start and imports included), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    return float(Path("/proc/uptime").read_text().split()[0]) - started


async def child_size(data_dir: Path, n: int, retention_ms: int) -> dict[str, Any]:
    conn = EngineConnection(
        SqliteStore(data_dir),
        pid=PID,
        group=GROUP,
        retention_ms=retention_ms,
        tick_interval_s=0.05,
        retention_check_s=0.1,
    )
    await conn.start()
    resonate = build(conn)
    await drive(resonate, "done", n)
    await asyncio.sleep(0.5)
    await resonate.stop()
    await conn.stop()
    return {"bytes": directory_size(data_dir)}


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def child(argv: list[str]) -> None:
    what = argv[0]
    if what == "throughput":
        out = asyncio.run(child_throughput(argv[1], Path(argv[2]), int(argv[3])))
    elif what == "backlog":
        asyncio.run(child_backlog(Path(argv[1]), int(argv[2])))
        return
    elif what == "restart":
        out = asyncio.run(child_restart(Path(argv[1])))
    else:
        out = asyncio.run(child_size(Path(argv[1]), int(argv[2]), int(argv[3])))
    print(json.dumps(out), flush=True)


def spawn(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "_child", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_backlog(data_dir: Path, n: int) -> float:
    """Build ``n`` suspended workflows in a child, then SIGKILL it (no clean stop)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "_child", "backlog", str(data_dir), str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return json.loads(line)["built_wf_per_s"]


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backlog", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
    try:
        report(work, args.n, args.runs, args.backlog)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path, n: int, runs: int, backlog: int) -> dict[str, Any]:
    """Every measurement, each configuration in fresh children, ``runs`` times over."""
    local, durable, normal, loaded = [], [], [], []
    commit_stats: list[dict[str, Any]] = []

    base = work / "backlog-base"
    built = build_backlog(base, backlog)
    crashed: dict[str, list[float]] = {"ready_s": [], "since_exec_s": [], "peak_rss_mb": []}
    clean: dict[str, list[float]] = {"ready_s": [], "since_exec_s": [], "peak_rss_mb": []}
    for run in range(runs):
        local.append(spawn("throughput", "local", str(work / f"l{run}"), str(n))["wf_per_s"])
        stats = spawn("throughput", "durable:FULL", str(work / f"d{run}"), str(n))
        durable.append(stats["wf_per_s"])
        commit_stats.append(stats)
        normal.append(
            spawn("throughput", "durable:NORMAL", str(work / f"n{run}"), str(n))["wf_per_s"]
        )
        copy = work / f"b{run}"
        shutil.copytree(base, copy)
        for key, value in spawn("restart", str(copy)).items():
            crashed[key].append(value)
        for key, value in spawn("restart", str(copy)).items():
            clean[key].append(value)
        loaded.append(spawn("throughput", "durable:FULL", str(copy), str(n))["wf_per_s"])
    return {
        "local": local,
        "durable": durable,
        "normal": normal,
        "backlog": loaded,
        "restart_crash": crashed,
        "restart_clean": clean,
        "built": built,
        "commits": commit_stats,
        "size_kept": spawn("size", str(work / "size-kept"), "1000", str(30 * 86_400_000))["bytes"],
        "size_purged": spawn("size", str(work / "size-purged"), "1000", "0")["bytes"],
    }


def report(work: Path, n: int, runs: int, backlog: int) -> None:
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}"
    )
    print(
        f"workflow: start → step → suspend on promise → resolve → complete; "
        f"N={n}, {IN_FLIGHT} in flight, median of {runs} runs\n"
    )
    measured = measure(work, n, runs, backlog)
    local, durable, normal = measured["local"], measured["durable"], measured["normal"]
    loaded, built, commit_stats = measured["backlog"], measured["built"], measured["commits"]
    crashed, clean = measured["restart_crash"], measured["restart_clean"]
    sizes, purged = measured["size_kept"], measured["size_purged"]

    rows = [
        ("LocalConnection (in memory), wf/s", median(local)),
        ("durable engine, synchronous=FULL, wf/s", median(durable)),
        ("  ratio durable/local (target ≥ 0.75)", median(durable) / median(local)),
        ("durable engine, synchronous=NORMAL, wf/s", median(normal)),
        (f"durable FULL with {backlog:,} suspended, wf/s", median(loaded)),
        ("  ratio backlog/empty (target ≥ 0.8)", median(loaded) / median(durable)),
        (f"cold restart after SIGKILL, {backlog:,} suspended, s", median(crashed["ready_s"])),
        (f"cold restart after clean stop, {backlog:,} suspended, s", median(clean["ready_s"])),
        ("  same, counted from process exec (imports included), s", median(clean["since_exec_s"])),
        ("  after SIGKILL, counted from process exec, s", median(crashed["since_exec_s"])),
        (f"peak RSS with {backlog:,} suspended loaded, MB", median(crashed["peak_rss_mb"])),
        ("db size per 1,000 completed (retained) workflows, KB", sizes / 1024),
        ("db size after retention purged those 1,000, KB", purged / 1024),
        ("(building the backlog ran at, wf/s to suspension)", built),
    ]
    for key in ("commits", "commit_ms_median", "commit_ms_p99", "loop_blocked_pct"):
        rows.append(
            (f"  group commit (FULL, empty): {key}", median([c[key] for c in commit_stats]))
        )
    for label, value in rows:
        print(f"{label:<58} {value:>10.2f}")
    raw = ("local", "durable", "normal", "backlog", "restart_crash", "restart_clean")
    print("\nraw runs:", json.dumps({key: measured[key] for key in raw}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
    else:
        main()
