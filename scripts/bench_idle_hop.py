"""What one hop between processes costs on this machine when the other side was idle.

The light-load figure of ``bench_rest.py`` (one trigger at a time, trigger → start) is a chain
of hops between processes — client → API → PostgreSQL → API (the commit) → the worker's
listener → PostgreSQL (its claim) → the worker — each of which finds the process it wakes
asleep. On a virtual machine a sleeping CPU costs more to wake than a busy one, so the same
round trip is slower after a pause than back to back, and the chain pays that at every hop.
This script measures it, so that a light-load figure can be read against the machine's floor:

1. a loopback TCP echo between two processes (one byte each way): the bare hop;
2. ``SELECT 1`` on PostgreSQL: a hop through the database;
3. a one-row ``INSERT`` with ``synchronous_commit`` on and off: a durable write (the WAL flush)
   and the same write without waiting for it.

Each is timed ``--count`` times with ``--gap`` milliseconds of sleep before every round trip
("after idle") and ``--count`` times back to back; p50 and p90 in milliseconds.

Usage:  uv run python scripts/bench_idle_hop.py [--count 200] [--gap 20]
Needs PostgreSQL on 127.0.0.1 (``SCHEDULER_TEST_POSTGRES_URL`` to point elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import asyncpg

ADMIN_DSN = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
).replace("postgresql+asyncpg://", "postgresql://")

#: The echo server, run as its own process: one byte back for every byte received.
ECHO_SERVER = """
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
print(server.getsockname()[1], flush=True)
connection, _ = server.accept()
connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = connection.recv(1)
    if not data:
        break
    connection.sendall(data)
"""


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"p50 {statistics.median(ordered):.3f} ms, p90 {p90:.3f} ms"


async def _timed(
    round_trip: Callable[[], Awaitable[object]], *, count: int, gap: float
) -> tuple[list[float], list[float]]:
    """(after idle, back to back) round-trip times in ms."""
    for _ in range(20):  # warm-up
        await round_trip()
    idle: list[float] = []
    for _ in range(count):
        await asyncio.sleep(gap)
        started = time.perf_counter()
        await round_trip()
        idle.append((time.perf_counter() - started) * 1000)
    busy: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        await round_trip()
        busy.append((time.perf_counter() - started) * 1000)
    return idle, busy


def _report(what: str, idle: list[float], busy: list[float]) -> None:
    penalty = statistics.median(idle) - statistics.median(busy)
    print(
        f"{what}: after idle {_summary(idle)}; back to back {_summary(busy)}; "
        f"idle costs {penalty:+.3f} ms (p50)",
        flush=True,
    )


async def _echo(count: int, gap: float) -> None:
    server = subprocess.Popen(  # noqa: S603, ASYNC220 - this interpreter, our own code
        [sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def round_trip() -> None:
            writer.write(b"x")
            await reader.readexactly(1)

        _report("loopback TCP echo (1 byte)", *await _timed(round_trip, count=count, gap=gap))
        writer.close()
    finally:
        server.kill()
        server.wait()


async def _postgres(count: int, gap: float) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    # A real table, not a temporary one: a temporary table's writes skip the WAL, and the
    # durable write's cost is its WAL flush.
    table = f"idle_hop_{os.getpid()}"
    try:
        select = await connection.prepare("SELECT 1")
        _report("PostgreSQL SELECT 1", *await _timed(select.fetchval, count=count, gap=gap))
        await connection.execute(f"CREATE TABLE {table} (id bigserial, v text)")
        insert = await connection.prepare(f"INSERT INTO {table} (v) VALUES ('x')")  # noqa: S608
        for mode in ("on", "off"):
            await connection.execute(f"SET synchronous_commit = {mode}")
            timed = await _timed(insert.fetch, count=count, gap=gap)
            _report(f"PostgreSQL one-row INSERT, synchronous_commit={mode}", *timed)
    finally:
        try:
            await connection.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=200, help="round trips per measurement")
    parser.add_argument("--gap", type=float, default=20.0, help="idle ms before each round trip")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    gap = args.gap / 1000
    await _echo(args.count, gap)
    await _postgres(args.count, gap)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
