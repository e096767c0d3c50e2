"""Event stream lag and delivery rate: from a commit to the SSE clients of ``GET /api/v1/events``.

Starts a real ``scheduler-api`` process on a fresh PostgreSQL database, connects ``--clients``
SSE clients (admin, no filter), then:

1. lag at light load: one writer commits an event every ``1/--rate`` s for ``--seconds``, each
   stamped with the wall clock just before its commit; every client's receipt time minus that
   stamp is one lag sample (p50/p99/max over all clients);
2. delivery rate: ``--burst`` events committed as fast as ``--writers`` writers can (10 per
   transaction); events/s = burst / (last receipt by the slowest client - first commit).

The events are recorded through the application (``record_event``), into the same log and
with the same cursor as run transitions. Usage:

    uv run python scripts/bench_events.py [--clients 3] [--rate 50] [--seconds 10]
                                          [--burst 5000] [--poll 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from scheduler_application.accounts.users import AccountService
from scheduler_application.events.log import record_event
from scheduler_domain.accounts import Role
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.security.passwords import Argon2PasswordHasher

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN_URL = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PASSWORD = "bench password " + secrets.token_hex(8)


async def _admin(statement: str) -> None:
    dsn = make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Client:
    """One SSE connection: the receipt time of every bench event, by its sequence number."""

    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        self.stamps: dict[int, float] = {}
        self.ready = asyncio.Event()

    async def follow(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        async with http.stream("GET", "/api/v1/events", headers=headers) as response:
            response.raise_for_status()
            self.ready.set()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                now = time.time()
                detail = json.loads(line[6:])["detail"]
                self.received[detail["n"]] = now
                self.stamps[detail["n"]] = detail["t"]


async def _write(uow_factory: SqlUnitOfWorkFactory, numbers: list[int]) -> None:
    clock = SystemClock()
    async with uow_factory() as uow:
        for n in numbers:
            await record_event(
                uow, "bench.tick", at=clock.now(), actor="bench", detail={"n": n, "t": time.time()}
            )
        await uow.commit()


async def _wait_for(clients: list[Client], numbers: range, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(any(n not in c.received for n in numbers) for c in clients):
        if time.monotonic() > deadline:
            missing = sum(n not in c.received for c in clients for n in numbers)
            raise RuntimeError(f"{missing} deliveries still missing after {timeout} s")
        await asyncio.sleep(0.05)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(args: argparse.Namespace) -> None:
    name = f"scheduler_bench_events_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    api: subprocess.Popen[bytes] | None = None
    engine = create_engine(url, pool_size=args.writers + 2)
    try:
        await asyncio.to_thread(upgrade, url)
        uow_factory = SqlUnitOfWorkFactory(engine)
        accounts = AccountService(
            uow_factory=uow_factory, clock=SystemClock(), hasher=Argon2PasswordHasher()
        )
        await accounts.create_user("bench", PASSWORD, Role.ADMIN)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        env.update(
            SCHEDULER_CONFIG=str(ROOT / "config" / "default.toml"),
            SCHEDULER__DATABASE__URL=url,
            SCHEDULER__API__PORT=str(port),
            SCHEDULER__API__JWT_SECRET=secrets.token_hex(32),
            SCHEDULER__EVENTS__POLL_SECONDS=str(args.poll),
            SCHEDULER__LOGGING__LEVEL="WARNING",
        )
        api = _start_api(env, Path(tempfile.gettempdir()) / f"{name}-api.log")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(30.0, read=None)
        ) as http:
            token = await _login(http)
            headers = {"Authorization": f"Bearer {token}"}
            clients = [Client() for _ in range(args.clients)]
            tasks = [asyncio.create_task(c.follow(http, headers)) for c in clients]
            await asyncio.gather(*(c.ready.wait() for c in clients))
            await asyncio.sleep(0.5)

            light = range(args.rate * args.seconds)
            for n in light:
                started = time.monotonic()
                await _write(uow_factory, [n])
                await asyncio.sleep(max(0.0, 1 / args.rate - (time.monotonic() - started)))
            await _wait_for(clients, light, 30)
            lags = [(c.received[n] - c.stamps[n]) * 1000 for c in clients for n in light]

            first = len(light)
            burst = range(first, first + args.burst)
            batches = [list(burst[i : i + 10]) for i in range(0, len(burst), 10)]
            began = time.time()

            async def writer(mine: list[list[int]]) -> None:
                for batch in mine:
                    await _write(uow_factory, batch)

            await asyncio.gather(*(writer(batches[i :: args.writers]) for i in range(args.writers)))
            committed = time.time() - began
            await _wait_for(clients, burst, 120)
            delivered = max(max(c.received[n] for n in burst) for c in clients) - began
            for task in tasks:
                task.cancel()
        print(f"load: {_uptime()}")
        print(
            f"clients {args.clients}, poll {args.poll} s; light: {len(light)} events at"
            f" {args.rate}/s; burst: {args.burst} events by {args.writers} writers"
        )
        print("lag ms (commit -> SSE client)   p50      p90      p99      max")
        print(
            f"{'':32}{statistics.median(lags):6.1f}  {_pct(lags, 0.9):7.1f}"
            f"  {_pct(lags, 0.99):7.1f}  {max(lags):7.1f}"
        )
        print(
            f"burst: committed in {committed:.2f} s ({args.burst / committed:.0f} ev/s);"
            f" delivered to every client in {delivered:.2f} s"
            f" ({args.burst / delivered:.0f} ev/s per client,"
            f" {args.burst * args.clients / delivered:.0f} ev/s in all)"
        )
    finally:
        if api is not None:
            api.terminate()
            api.wait(30)
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_api(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(  # noqa: S603 - our own console script
            [str(BIN / "scheduler-api")], env=env, stdout=handle, stderr=subprocess.STDOUT
        )


def _uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)  # noqa: S607
    return done.stdout.strip()


async def _login(http: httpx.AsyncClient) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            response = await http.post(
                "/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
            )
            if response.status_code == 200:
                return str(response.json()["access_token"])
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rate", type=int, default=50, help="events/s at light load")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--poll", type=float, default=0.1, help="events.poll_seconds")
    args: Any = parser.parse_args()
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
