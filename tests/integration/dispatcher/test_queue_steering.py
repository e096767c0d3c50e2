"""Queues you can steer, with a running dispatcher and a real worker on each queue backend
(memory on SQLite, postgres on PostgreSQL, Redis and RabbitMQ on SQLite): pausing a queue holds
its runs — also those whose messages are already in the broker — without losing or failing any,
and resuming runs them; ``max_concurrency`` caps the queue's runs in flight across its tasks."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import aio_pika
import pytest
import redis.asyncio as aioredis
from dispatcher_stack import OWNER, DispatcherStack, dispatcher_stack, running_worker
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.accounts.access import Principal
from scheduler_application.operations.queue_control import QueueChanges, QueueControl
from scheduler_application.ports.queue import RunQueue
from scheduler_domain.accounts import Role
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.migrations import target_metadata
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues import build_run_queue
from services import RABBITMQ_URL, REDIS_URL, require_service

pytestmark = pytest.mark.timeout(120)

OPERATOR = Principal(subject_id="op-1", role=Role.OPERATOR)
RUNS = 4

BACKENDS = [
    "memory",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
]


@dataclass
class Backend:
    name: str
    engine: AsyncEngine
    queue: RunQueue
    prefix: str


async def _wipe(engine: AsyncEngine) -> None:
    tables = target_metadata().sorted_tables
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            names = ", ".join(table.name for table in tables)
            await connection.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                await connection.execute(delete(table))


async def _clean_broker(name: str, prefix: str, queue_names: list[str]) -> None:
    if name == "redis":
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
    elif name == "rabbitmq":
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            for queue in queue_names:
                for full in (f"{prefix}.{queue}", f"{prefix}.{queue}.dead"):
                    await channel.queue_delete(full)
        finally:
            await connection.close()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> tuple[str, AsyncEngine]:
    """The queue backend's name and the database beside it."""
    name = str(request.param)
    engine: AsyncEngine = request.getfixturevalue(
        "postgres_engine" if name == "postgres" else "sqlite_engine"
    )
    return name, engine


@pytest.fixture
async def backend(
    database: tuple[str, AsyncEngine], request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    name, engine = database
    await require_service(name)
    prefix = f"steer{secrets.token_hex(4)}"
    options: dict[str, object] = {}
    if name in ("postgres", "redis"):
        options["visibility_timeout"] = 5.0
    if name == "postgres":
        options["poll_interval"] = 0.2
    queue = build_run_queue(
        backend=name,
        engine=engine if name == "postgres" else None,
        rabbitmq_url=RABBITMQ_URL,
        redis_url=REDIS_URL,
        prefix=prefix,
        **options,
    )
    await queue.__aenter__()
    used: list[str] = []
    request.node.queue_names = used  # type: ignore[attr-defined]
    try:
        yield Backend(name=name, engine=engine, queue=queue, prefix=prefix)
    finally:
        await queue.aclose()
        await _wipe(engine)
        await _clean_broker(name, prefix, used)


def _control(stack: DispatcherStack) -> QueueControl:
    return QueueControl(uow_factory=stack.uow_factory, clock=stack.clock)


async def _statuses(stack: DispatcherStack, task_id: str) -> list[RunStatus]:
    return [run.status for run in await stack.runs_of(task_id)]


async def test_pause_holds_runs_and_resume_runs_them_with_a_real_worker(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    queue_name = f"steered-{secrets.token_hex(3)}"
    request.node.queue_names.append(queue_name)
    async with dispatcher_stack(SqlUnitOfWorkFactory(backend.engine), queue=backend.queue) as stack:
        control = _control(stack)
        task_id = await stack.create_task("steered", executor="noop", queue=queue_name)
        for n in range(RUNS):
            await stack.runs.trigger(task_id, principal=OWNER, idempotency_key=f"k{n}")

        async def all_queued() -> bool:
            return await _statuses(stack, task_id) == [RunStatus.QUEUED] * RUNS

        # Published while no worker listens: their messages wait in the broker.
        await stack.wait_for(all_queued)

        paused = await control.pause(queue_name, principal=OPERATOR)

        assert paused.settings.paused
        assert await _statuses(stack, task_id) == [RunStatus.PENDING] * RUNS
        runtime = stack.worker(queues=(queue_name,))
        async with running_worker(runtime):
            request.node.queue_names.append(runtime.worker.direct_queue)  # type: ignore[union-attr]

            async def messages_dropped() -> bool:
                return runtime.stats.duplicates >= RUNS

            # The worker gets the old messages and finds nothing to claim: workers stop
            # taking from a paused queue, and nothing is failed.
            await stack.wait_for(messages_dropped)
            late = await stack.runs.trigger(task_id, principal=OWNER, idempotency_key="late")
            for _ in range(3):  # the relay leaves a paused queue's pending runs alone
                assert await stack.relay.relay_pending() == []
            assert runtime.stats.claimed == 0
            assert await _statuses(stack, task_id) == [RunStatus.PENDING] * (RUNS + 1)
            assert (await stack.runs.get(late.id, principal=OWNER)).status is RunStatus.PENDING

            await control.resume(queue_name, principal=OPERATOR)

            async def all_succeeded() -> bool:
                return await _statuses(stack, task_id) == [RunStatus.SUCCEEDED] * (RUNS + 1)

            await stack.wait_for(all_succeeded, within=30)
        assert runtime.stats.claimed == RUNS + 1
        events = await stack.runs.events((await stack.runs_of(task_id))[0].id, principal=OWNER)
        moves = [(e.from_status, e.to_status) for e in events]
        assert (RunStatus.QUEUED, RunStatus.PENDING) in moves
        assert moves[-1] == (RunStatus.RUNNING, RunStatus.SUCCEEDED)


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        current += step
        most = max(most, current)
    return most


async def test_max_concurrency_caps_the_queue_across_its_tasks(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    cap = 2
    async with dispatcher_stack(uow_factory) as stack:
        control = _control(stack)
        await control.update("capped", QueueChanges(max_concurrency=cap), principal=OPERATOR)
        task_ids = [
            await stack.create_task(
                f"slow-{n}", executor="shell", params={"argv": ["sleep", "0.3"]}, queue="capped"
            )
            for n in range(3)
        ]
        for task_id in task_ids:
            for n in range(3):
                await stack.runs.trigger(task_id, principal=OWNER, idempotency_key=f"k{n}")
        async with running_worker(stack.worker(queues=("capped",), capacity=8)):

            async def all_done() -> bool:
                for task_id in task_ids:
                    if await _statuses(stack, task_id) != [RunStatus.SUCCEEDED] * 3:
                        return False
                return True

            await stack.wait_for(all_done, within=60)
        spans = [
            (run.started_at, run.finished_at)
            for task_id in task_ids
            for run in await stack.runs_of(task_id)
            if run.started_at is not None and run.finished_at is not None
        ]
    assert len(spans) == 9
    assert _most_at_once(spans) == cap  # never more, and the cap was reached
