"""``api.workers``: ``scheduler-api`` as several processes on one socket, supervised."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Cluster, eventually, free_port

pytestmark = pytest.mark.timeout(120)


def _children(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z":
            found.add(int(entry.name))
    return found


def _connections(pids: set[int], port: int) -> dict[int, int]:
    """Established connections on ``port`` held by each of ``pids`` (from /proc)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED
                inodes[fields[9]] = local_port
    held: dict[int, int] = {}
    for pid in pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        held[pid] = count
    return held


async def test_several_processes_share_the_socket_and_a_crashed_one_is_replaced(
    cluster_factory: Any,
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    cluster.extra_env["SCHEDULER__API__WORKERS"] = "3"
    api, client = await cluster.api()
    port = int(cluster.extra_env["SCHEDULER__API__PORT"])

    async def three_children() -> set[int] | None:
        found = _children(api.pid)
        return found if len(found) == 3 else None

    children: set[int] = await eventually(three_children, timeout=30)
    # Many concurrent connections are spread over more than one process.

    # The kernel hands each connection to whichever process accepts first, so one idle process
    # may take a whole wave: connections come in waves of 24 until more than one holds some.
    clients: list[httpx.AsyncClient] = []
    try:
        held: dict[int, int] = {}
        for _ in range(8):
            wave = [httpx.AsyncClient(base_url=str(client.base_url)) for _ in range(24)]
            clients.extend(wave)
            await asyncio.gather(*(c.get("/health") for c in wave))
            held = _connections(children, port)
            if sum(1 for n in held.values() if n) >= 2:
                break
        assert sum(held.values()) >= len(clients), held  # and the harness's own client
        assert sum(1 for n in held.values() if n) >= 2, held
    finally:
        for c in clients:
            await c.aclose()

    # Everything the processes answer comes from the shared database.
    created = await client.post("/api/v1/tasks", json={"name": "shared", "executor": "noop"})
    assert created.status_code == 201, created.text
    for _ in range(6):
        async with httpx.AsyncClient(
            base_url=str(client.base_url), headers=client.headers
        ) as fresh:
            got = await fresh.get(f"/api/v1/tasks/{created.json()['id']}")
            assert got.status_code == 200, got.text

    # A crash is not an outage: the dead process is replaced.
    victim = min(children)
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> set[int] | None:
        found = _children(api.pid)
        return found if len(found) == 3 and victim not in found else None

    after: set[int] = await eventually(replaced, timeout=30)
    assert (await client.get("/health")).status_code == 200

    # SIGTERM stops them all, cleanly.
    api.signal(signal.SIGTERM)
    assert await api.wait(30) == 0
    assert not [pid for pid in after if os.path.exists(f"/proc/{pid}")]  # noqa: ASYNC240


async def test_a_process_that_cannot_start_stops_them_all_with_status_2(
    cluster_factory: Any,
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    process = cluster.start(
        "scheduler-api",
        "api-bad-db",
        SCHEDULER__API__WORKERS="2",
        SCHEDULER__API__JWT_SECRET="x" * 40,
        SCHEDULER__API__PORT=str(free_port()),
        SCHEDULER__DATABASE__URL=cluster.database_url.rsplit("/", 1)[0] + "/no_such_database",
    )
    assert await process.wait(60) == 2
    output = process.output()
    assert "no_such_database" in output
    assert "stopping the others" in output
