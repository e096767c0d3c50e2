"""Webhook delivery lag and rate: from a commit to a local receiver's socket.

On a fresh PostgreSQL database, an admin's subscription points at a local HTTP receiver
(asyncio, answers 200 at once), and the dispatcher's real ``webhooks`` loop (the
``WebhookDispatcher`` through the guarded HTTP sender; loopback allowed as
``events.webhooks.allow`` would) delivers. Then:

1. lag at light load: one event committed every ``1/--rate`` s for ``--seconds``, each stamped
   with the wall clock just before its commit; receipt minus stamp is one sample (p50/p99/max);
2. delivery rate: ``--burst`` events committed at once (100 per transaction); events/s =
   burst / (last receipt - first commit).

One subscription delivers one event at a time, in log order, and stores each delivery before
the next (the price of per-subscription order); several subscriptions deliver in parallel.

    uv run python scripts/bench_webhooks.py [--rate 50] [--seconds 10] [--burst 3000]
                                            [--interval 0.2] [--subscriptions 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from scheduler_application.accounts.access import Principal
from scheduler_application.events.log import record_event
from scheduler_application.events.webhook_delivery import DeliverySettings, WebhookDispatcher
from scheduler_application.events.webhooks import WebhookService
from scheduler_dispatcher.loops import webhook_loop
from scheduler_domain.accounts import Role, User
from scheduler_domain.outbound import OutboundPolicy
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.outbound.webhook_sender import HttpWebhookSender
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.persistence.webhooks import SqlWebhookStore

ADMIN_URL = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def _admin(statement: str) -> None:
    dsn = make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class Receiver:
    """Answers 200 at once; the receipt time of every bench event, by (subscription, n)."""

    def __init__(self) -> None:
        self.received: dict[tuple[int, int], float] = {}
        self.stamps: dict[int, float] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                path = line.decode().split(" ")[1]
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length))
                detail = body["data"]["detail"]
                if "n" in detail:
                    sub = int(path.rsplit("/", 1)[1])
                    self.received[(sub, detail["n"])] = time.time()
                    self.stamps[detail["n"]] = detail["t"]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _write(uow_factory: SqlUnitOfWorkFactory, numbers: list[int], owner: str) -> None:
    clock = SystemClock()
    async with uow_factory() as uow:
        for n in numbers:
            await record_event(
                uow,
                "bench.tick",
                at=clock.now(),
                actor="bench",
                owner_id=owner,
                detail={"n": n, "t": time.time()},
            )
        await uow.commit()


async def _wait_for(receiver: Receiver, subs: int, numbers: range, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any((s, n) not in receiver.received for s in range(subs) for n in numbers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"deliveries still missing after {timeout} s")
        await asyncio.sleep(0.02)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(args: argparse.Namespace) -> None:
    name = f"scheduler_bench_webhooks_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    engine = create_engine(url, pool_size=args.subscriptions + 4)
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop_task: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(upgrade, url)
        uow_factory = SqlUnitOfWorkFactory(engine)
        now = datetime.now(UTC)
        admin = User(
            username="bench",
            password_hash="-",  # noqa: S106 - never logs in
            role=Role.ADMIN,
            created_at=now,
            updated_at=now,
        )
        async with uow_factory() as uow:
            await uow.users.add(admin)
            await uow.commit()
        store = SqlWebhookStore(engine)
        clock = SystemClock()
        async with HttpWebhookSender(policy=OutboundPolicy.from_allow(["127.0.0.1"])) as sender:
            service = WebhookService(store=store, uow_factory=uow_factory, sender=sender,
                                     clock=clock)  # fmt: skip
            principal = Principal(subject_id=admin.id, role=Role.ADMIN)
            for n in range(args.subscriptions):
                await service.create(principal=principal, url=f"http://127.0.0.1:{port}/h/{n}")
            dispatcher = WebhookDispatcher(
                store=store,
                uow_factory=uow_factory,
                sender=sender,
                clock=clock,
                settings=DeliverySettings(timeout=timedelta(seconds=10)),
            )
            loop = webhook_loop(dispatcher, interval=timedelta(seconds=args.interval))
            loop_task = asyncio.create_task(loop.run())

            total = args.rate * args.seconds
            started = time.monotonic()
            for n in range(total):
                await _write(uow_factory, [n], admin.id)
                await asyncio.sleep(max(0.0, started + (n + 1) / args.rate - time.monotonic()))
            await _wait_for(receiver, args.subscriptions, range(total), timeout=60)
            lags = [
                (receiver.received[(s, n)] - receiver.stamps[n]) * 1000
                for s in range(args.subscriptions)
                for n in range(total)
            ]
            print(
                f"light load: {total} events at {args.rate}/s, {args.subscriptions} "
                f"subscription(s), loop interval {args.interval} s -> lag p50 "
                f"{_pct(lags, 0.5):.1f} ms, p99 {_pct(lags, 0.99):.1f} ms, max {max(lags):.1f} ms"
            )

            burst = range(total, total + args.burst)
            first_commit = time.time()
            numbers = list(burst)
            for i in range(0, len(numbers), 100):
                await _write(uow_factory, numbers[i : i + 100], admin.id)
            written = time.time() - first_commit
            await _wait_for(receiver, args.subscriptions, burst, timeout=600)
            last = max(receiver.received[(s, n)] for s in range(args.subscriptions) for n in burst)
            span = last - first_commit
            delivered = args.burst * args.subscriptions
            print(
                f"burst: {args.burst} events committed in {written:.2f} s, delivered to "
                f"{args.subscriptions} subscription(s) in {span:.2f} s -> "
                f"{delivered / span:.0f} deliveries/s"
            )
            print(f"uptime: {_uptime()}")
    finally:
        if loop_task is not None:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        server.close()
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)  # noqa: S607
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=50, help="events/s at light load")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--interval", type=float, default=0.2, help="events.webhooks.interval")
    parser.add_argument("--subscriptions", type=int, default=1)
    args: Any = parser.parse_args()
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
