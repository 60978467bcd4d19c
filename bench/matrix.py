"""Crash matrix: every kill point × every topology, printed as one table.

The runs are those of ``tests/test_crash_matrix.py`` (the driver is ``tests/crash_matrix.py``):
one request per cell, the process doing its work SIGKILLed at the kill point and restarted,
then the request driven to its end. Each cell says what the request took: rounds decided,
emails received at the SMTP sink (a resend keeps its Message-ID), calls answered by the fake
Ollama, and the time from submit to the outcome callback (restarts and lease expiry included).

Usage: ``python bench/matrix.py [--topologies embedded,split,postgres]`` (~2 min; the Postgres
column needs ``../shared/vendor/resonate-pg/resonate.sql``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import crash_matrix  # noqa: E402  (tests/crash_matrix.py: the matrix's driver)
import postgres  # noqa: E402  (tests/postgres.py: a Postgres server from the wheel)


async def main(topologies: list[str]) -> None:
    server = postgres.running() if "postgres" in topologies else None
    outcomes: list[crash_matrix.Outcome] = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with crash_matrix.world() as world:
                for topology in topologies:
                    database = server.new_database() if topology == "postgres" else None
                    outcomes += await crash_matrix.run_topology(
                        topology, world, Path(tmp) / topology, database
                    )
                    print(f"{topology}: done", file=sys.stderr)
    finally:
        if server is not None:
            server.destroy()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {len(outcomes)} cells in "
        f"{time.monotonic() - started:.0f} s"
    )
    print(crash_matrix.table(outcomes))
    if not all(o.ok for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topologies", default=",".join(crash_matrix.TOPOLOGIES))
    args = parser.parse_args()
    asyncio.run(main(args.topologies.split(",")))
