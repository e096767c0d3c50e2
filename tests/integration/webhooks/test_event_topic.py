"""The broker topic on the real RabbitMQ and Redis: every transition of 1,000 runs arrives,
in order per run, also when the broker connection is cut mid-stream and comes back.

A connection cut: the publisher connects through a TCP proxy started here, which is killed
(every connection cut, the port closed) and started again. A broker restart: RabbitMQ's app is
stopped and started (``rabbitmqctl``), Redis shut down and started, always started again and
waited for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aio_pika
import pytest
import redis.asyncio as aioredis
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from integration_support_rabbitmq import rabbitmqctl, wait_until_answering
from integration_support_redis import start_redis, stop_redis
from scheduler_application.errors import Unavailable
from scheduler_application.events.topic import EventTopicRelay
from scheduler_application.ports.webhooks import EventTopic
from scheduler_domain.events import RunEvent
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.tables import (
    event_consumers,
    run_events,
    task_runs,
    tasks,
)
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.persistence.webhooks import SqlConsumerPositions
from scheduler_infrastructure.queues.event_topics import RabbitMQEventTopic, RedisEventTopic
from services import RABBITMQ_URL, REDIS_URL, require, require_service
from tcp_proxy import TcpProxy

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

RUNS = 1000
LIFECYCLE = [RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def log(sqlite_engine: AsyncEngine) -> AsyncIterator[SqlUnitOfWorkFactory]:
    yield SqlUnitOfWorkFactory(sqlite_engine)
    async with sqlite_engine.begin() as conn:
        for table in (run_events, task_runs, tasks, event_consumers):
            await conn.execute(delete(table))


async def write_lifecycles(uow_factory: SqlUnitOfWorkFactory) -> dict[str, list[str]]:
    """1,000 runs, their transitions interleaved in the log (round by round); the event ids
    of each run in order."""
    runs: list[TaskRun] = []
    async with uow_factory() as uow:
        for n in range(RUNS):
            task = Task(owner_id="o", name=f"t{n}", executor="noop", created_at=T0, updated_at=T0)
            run = TaskRun(
                task_id=task.id,
                owner_id="o",
                attempt=1,
                trigger=RunTrigger.MANUAL,
                scheduled_for=T0,
                created_at=T0,
                queue="default",
            )
            await uow.tasks.add(task)
            await uow.runs.add(run)
            runs.append(run)
        await uow.commit()
    expected: dict[str, list[str]] = defaultdict(list)
    previous: RunStatus | None = None
    for status in LIFECYCLE:
        events = [
            RunEvent(
                run_id=run.id,
                task_id=run.task_id,
                from_status=previous,
                to_status=status,
                at=T0,
                actor="test",
            )
            for run in runs
        ]
        async with uow_factory() as uow:
            await uow.events.add_many(events)
            await uow.commit()
        for event in events:
            expected[event.run_id].append(event.id)
        previous = status
    return expected


async def publish_with_an_outage(relay: EventTopicRelay, proxy: TcpProxy, *, cut_at: int) -> int:
    """Step the relay to the end; once ``cut_at`` events are out, kill the proxy, fail a few
    steps against it, start it again. Returns how many steps failed."""
    failures = 0
    cut = False
    async with asyncio.timeout(180):
        while True:
            if not cut and relay.published >= cut_at:
                cut = True
                await proxy.stop()
                for _ in range(3):
                    with pytest.raises(Unavailable):
                        await relay.step()
                    failures += 1
                await proxy.start()
            try:
                more = await relay.step()
            except Unavailable:
                failures += 1
                await asyncio.sleep(0.1)
                continue
            if cut and not more:
                return failures


async def publish_across_a_restart(
    relay: EventTopicRelay,
    cut_at: int,
    *,
    stop: Callable[[], Awaitable[None]],
    start: Callable[[], Awaitable[None]],
) -> int:
    """Step the relay until ``cut_at`` events are out, ``stop`` the broker, see two steps fail,
    ``start`` it again (whatever happened), then step to the end. Returns the failed steps."""
    while relay.published < cut_at:
        await relay.step()
    failures = 0
    try:
        await stop()
        for _ in range(2):
            with pytest.raises(Unavailable):
                await relay.step()
            failures += 1
    finally:
        await start()
    while True:
        try:
            more = await relay.step()
        except Unavailable:
            failures += 1
            await asyncio.sleep(0.2)
            continue
        if not more:
            return failures


def check_order(expected: dict[str, list[str]], received: list[tuple[str, str]]) -> None:
    """``received``: (run id, event id) in arrival order, duplicates allowed. Every event
    arrived; the first arrivals of each run's events are in its order."""
    seen: set[str] = set()
    per_run: dict[str, list[str]] = defaultdict(list)
    for run_id, event_id in received:
        if event_id in seen:
            continue
        seen.add(event_id)
        per_run[run_id].append(event_id)
    assert len(seen) == RUNS * len(LIFECYCLE)
    assert per_run == expected


def _relay(
    topic: EventTopic, uow_factory: SqlUnitOfWorkFactory, engine: AsyncEngine
) -> EventTopicRelay:
    return EventTopicRelay(
        topic=topic,
        positions=SqlConsumerPositions(engine),
        uow_factory=uow_factory,
        clock=SystemClock(),
        batch=200,
        start_at_head=False,
    )


async def _proxied(url: str, default_port: int) -> TcpProxy:
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    await proxy.start()
    return proxy


def _through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host).geturl()


@pytest.mark.rabbitmq
async def test_rabbitmq_topic_gets_every_transition_in_order_across_an_outage(
    log: SqlUnitOfWorkFactory, sqlite_engine: AsyncEngine
) -> None:
    await require_service("rabbitmq")
    exchange = f"scheduler.events.test-{secrets.token_hex(4)}"
    received: list[tuple[str, str]] = []
    keys: set[str] = set()
    consumer = await aio_pika.connect(RABBITMQ_URL)
    proxy = await _proxied(RABBITMQ_URL, 5672)
    try:
        channel = await consumer.channel()
        topic_exchange = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(topic_exchange, routing_key="run.#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                body = json.loads(message.body)
                keys.add(message.routing_key or "")
                assert message.message_id == body["data"]["id"]
                received.append((body["data"]["run_id"], body["data"]["id"]))

        await queue.consume(on_message)
        expected = await write_lifecycles(log)
        topic = RabbitMQEventTopic(url=_through(RABBITMQ_URL, proxy), exchange=exchange)
        relay = _relay(topic, log, sqlite_engine)
        total = RUNS * len(LIFECYCLE)
        failures = await publish_with_an_outage(relay, proxy, cut_at=total // 3)
        await relay.aclose()
        assert failures >= 3
        assert proxy.connections >= 2
        await _until(lambda: _count(received, total), within=5)
        check_order(expected, received)
        assert keys == {f"run.{s.value}" for s in LIFECYCLE}
    finally:
        await proxy.stop()
        with_channel = await consumer.channel()
        await with_channel.exchange_delete(exchange)
        await consumer.close()


@pytest.mark.redis
async def test_redis_stream_gets_every_transition_in_order_across_an_outage(
    log: SqlUnitOfWorkFactory, sqlite_engine: AsyncEngine
) -> None:
    await require_service("redis")
    stream = f"scheduler-test:{secrets.token_hex(4)}:events"
    proxy = await _proxied(REDIS_URL, 6379)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        expected = await write_lifecycles(log)
        topic = RedisEventTopic(url=_through(REDIS_URL, proxy), stream=stream)
        relay = _relay(topic, log, sqlite_engine)
        total = RUNS * len(LIFECYCLE)
        failures = await publish_with_an_outage(relay, proxy, cut_at=total // 3)
        await relay.aclose()
        assert failures >= 3
        assert proxy.connections >= 2
        entries = await client.xrange(stream, count=total * 3)
        received = []
        for _entry_id, fields in entries:
            body = json.loads(fields[b"body"])
            assert fields[b"id"].decode() == body["data"]["id"]
            assert fields[b"type"].decode() == body["type"]
            received.append((body["data"]["run_id"], body["data"]["id"]))
        check_order(expected, received)
    finally:
        await proxy.stop()
        await client.delete(stream)
        await client.aclose()


async def _count(received: list[tuple[str, str]], total: int) -> bool:
    return len({event_id for _run, event_id in received}) >= total


async def _until(predicate: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not await predicate():
            await asyncio.sleep(0.05)


@pytest.mark.rabbitmq
async def test_rabbitmq_topic_gets_every_transition_in_order_across_a_broker_restart(
    log: SqlUnitOfWorkFactory, sqlite_engine: AsyncEngine
) -> None:
    """The broker itself stops (``rabbitmqctl stop_app``) a third of the way through and comes
    back: publishing fails while it is down, resumes from the stored position, and a durable
    queue bound to the exchange holds every transition, in order per run. Whatever happens,
    the broker is left running and answering."""
    await require_service("rabbitmq")
    require("rabbitmqctl", None if shutil.which("rabbitmqctl") else "not on PATH")
    exchange = f"scheduler.events.test-{secrets.token_hex(4)}"
    queue_name = f"{exchange}.audit"
    setup = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await setup.channel()
        topic_exchange = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(topic_exchange, routing_key="run.#")
    finally:
        await setup.close()
    expected = await write_lifecycles(log)
    topic = RabbitMQEventTopic(url=RABBITMQ_URL, exchange=exchange)
    relay = _relay(topic, log, sqlite_engine)
    total = RUNS * len(LIFECYCLE)
    try:

        async def stop() -> None:
            await rabbitmqctl("stop_app")

        async def start() -> None:
            await rabbitmqctl("start_app")
            await wait_until_answering()

        async with asyncio.timeout(200):
            failures = await publish_across_a_restart(relay, total // 3, stop=stop, start=start)
        await relay.aclose()
        assert failures >= 2
        received: list[tuple[str, str]] = []
        reader = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await reader.channel()
            durable = await channel.declare_queue(queue_name, durable=True, passive=True)
            while (message := await durable.get(no_ack=True, fail=False)) is not None:
                body = json.loads(message.body)
                received.append((body["data"]["run_id"], body["data"]["id"]))
        finally:
            await reader.close()
        check_order(expected, received)
    finally:
        cleanup = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await cleanup.channel()
            await channel.queue_delete(queue_name)
            await channel.exchange_delete(exchange)
        finally:
            await cleanup.close()


class StreamReader:
    """An outside consumer of the Redis stream, reading throughout (``XREAD BLOCK`` after the
    last id it saw) and reconnecting when Redis goes away — what a real consumer does."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.received: list[tuple[str, str]] = []
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        last = "0-0"
        while True:
            client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
            try:
                while True:
                    batches = await client.xread({self.stream: last}, count=500, block=200)
                    for _stream, entries in batches:
                        for entry_id, fields in entries:
                            last = entry_id.decode()
                            body = json.loads(fields[b"body"])
                            assert fields[b"id"].decode() == body["data"]["id"]
                            self.received.append((body["data"]["run_id"], body["data"]["id"]))
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                self.errors += 1
                await asyncio.sleep(0.1)
            finally:
                await client.aclose()

    def distinct(self) -> int:
        return len({event_id for _run, event_id in self.received})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.mark.redis
async def test_redis_stream_consumer_gets_every_transition_in_order_across_a_redis_restart(
    log: SqlUnitOfWorkFactory, sqlite_engine: AsyncEngine
) -> None:
    """Redis itself is shut down (``SHUTDOWN NOSAVE``) a third of the way through and started
    again: publishing fails while it is down and resumes from the stored position; a consumer
    reading the stream throughout reconnects and ends with every transition, in order per run.

    Redis here keeps nothing on disk, so the restart empties the stream: the consumer has read
    what was published before the stop (the test waits for that — an entry published but not
    yet read when a Redis without persistence dies is gone, see docs/events.md), and new
    entries get ids after the ones it saw, so it carries on from its last id. Whatever
    happens, Redis is left running and answering."""
    await require_service("redis")
    require("redis-server", None if shutil.which("redis-server") else "not on PATH")
    stream = f"scheduler-test:{secrets.token_hex(4)}:events"
    expected = await write_lifecycles(log)
    topic = RedisEventTopic(url=REDIS_URL, stream=stream, timeout=2.0)
    relay = _relay(topic, log, sqlite_engine)
    total = RUNS * len(LIFECYCLE)
    reader = StreamReader(stream)
    reader.start()
    try:

        async def stop() -> None:
            # What was published before the stop has been read (see the docstring).
            await _until(lambda: _at_least(reader, relay.published), within=30)
            await stop_redis()

        async with asyncio.timeout(200):
            failures = await publish_across_a_restart(
                relay, total // 3, stop=stop, start=start_redis
            )
            await _until(lambda: _at_least(reader, total), within=30)
        await relay.aclose()
        assert failures >= 2
        assert reader.errors >= 1  # the consumer did see Redis go away
        check_order(expected, reader.received)
    finally:
        await reader.stop()
        await start_redis()
        client = aioredis.Redis.from_url(REDIS_URL)
        await client.delete(stream)
        await client.aclose()


async def _at_least(reader: StreamReader, count: int) -> bool:
    return reader.distinct() >= count
