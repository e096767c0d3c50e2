"""Workers' direct queues on the real RabbitMQ broker: a deregistered or retired worker's empty
queue (and its dead-letter queue) is deleted from the broker; one holding a message of a run
that waits there is kept with the message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import aio_pika
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from queue_helpers import PREFIX, QueueMaker, eventually, run_message

from in_process_worker import builtin_registry, in_process_worker
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.testing import FakeClock, InMemoryStore, InMemoryUnitOfWorkFactory
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker
from scheduler_infrastructure.clock import SystemClock
from scheduler_worker.runtime import WorkerOptions
from services import RABBITMQ_URL

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

DAY = timedelta(days=1)


@pytest.fixture
async def broker() -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(RABBITMQ_URL)
    yield connection
    await connection.close()


async def exists(broker: aio_pika.abc.AbstractRobustConnection, name: str) -> bool:
    channel = await broker.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
    return True


async def register(registry: WorkerService, name: str) -> Worker:
    return await registry.register(
        RegisterWorker(name=name, hostname="h", pid=1, queues=("default",), capacity=1)
    )


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


async def test_empty_direct_queues_are_deleted_from_the_broker_and_busy_ones_kept(
    make_queue: QueueMaker,
    broker: aio_pika.abc.AbstractRobustConnection,
    store: InMemoryStore,
) -> None:
    queue = await make_queue()
    clock = FakeClock()
    registry = WorkerService(uow_factory=InMemoryUnitOfWorkFactory(store), clock=clock, queue=queue)
    idle, busy = await register(registry, "idle"), await register(registry, "busy")
    names = {w.id: f"{PREFIX}.{w.direct_queue}" for w in (idle, busy)}
    # The worker declared its queue by consuming it; a run waits on the busy one's.
    for worker in (idle, busy):
        await queue.depth(worker.direct_queue)
    task = Task(
        owner_id="o", name="t", executor="noop", created_at=clock.now(), updated_at=clock.now()
    )
    store.put("tasks", task)
    waiting = TaskRun(
        task_id=task.id,
        owner_id="o",
        trigger=RunTrigger.MANUAL,
        scheduled_for=clock.now(),
        created_at=clock.now(),
        status=RunStatus.QUEUED,
        queue=busy.direct_queue,
    )
    store.put("runs", waiting)
    await queue.publish(run_message(busy.direct_queue, run_id=waiting.id))
    try:
        await registry.deregister(idle.id)
        await registry.deregister(busy.id)

        assert not await exists(broker, names[idle.id])
        assert not await exists(broker, names[idle.id] + ".dead")
        assert await exists(broker, names[busy.id])

        clock.advance(2 * DAY)
        report = await registry.retire_offline(DAY, limit=10)

        assert [w.id for w, _ in report.kept] == [busy.id]
        assert await queue.depth(busy.direct_queue) == 1  # the message is still there
        assert await exists(broker, names[busy.id])
    finally:
        channel = await broker.channel()
        for name in names.values():
            await channel.queue_delete(name)
            await channel.queue_delete(name + ".dead")
        await channel.close()


async def test_a_dead_workers_queue_of_duplicates_is_swept_and_deleted(
    make_queue: QueueMaker,
    broker: aio_pika.abc.AbstractRobustConnection,
    store: InMemoryStore,
) -> None:
    queue = await make_queue()
    clock = FakeClock()
    registry = WorkerService(uow_factory=InMemoryUnitOfWorkFactory(store), clock=clock, queue=queue)
    dead = await register(registry, "dead")
    name = f"{PREFIX}.{dead.direct_queue}"
    # A message of a run that was re-routed elsewhere (or that ended): a duplicate.
    await queue.publish(run_message(dead.direct_queue))
    try:
        await registry.deregister(dead.id)
        assert await exists(broker, name)  # it held a message

        clock.advance(2 * DAY)
        report = await registry.retire_offline(DAY, limit=10)

        assert [w.id for w in report.retired] == [dead.id]
        assert not await exists(broker, name)
        assert not await exists(broker, name + ".dead")
    finally:
        channel = await broker.channel()
        await channel.queue_delete(name)
        await channel.queue_delete(name + ".dead")
        await channel.close()


async def test_a_worker_runtime_stopping_cleanly_leaves_no_direct_queue_behind(
    make_queue: QueueMaker,
    broker: aio_pika.abc.AbstractRobustConnection,
    store: InMemoryStore,
) -> None:
    """The real runtime consumes its direct queue (declaring it), stops, deregisters: the queue
    and its dead-letter queue are gone from the broker — no longer two per worker id."""
    queue = await make_queue()
    uow_factory = InMemoryUnitOfWorkFactory(store)
    clock = SystemClock()
    runtime = in_process_worker(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        executors=builtin_registry(),
        options=WorkerOptions(
            queues=(f"shared-{PREFIX}",), heartbeat_interval=timedelta(seconds=0.2)
        ),
    )
    running = asyncio.create_task(runtime.run())
    worker = await asyncio.wait_for(runtime.wait_started(), timeout=10)
    name = f"{PREFIX}.{worker.direct_queue}"
    try:

        async def declared() -> bool:
            return await exists(broker, name)

        await eventually(declared, within=10)
        runtime.stop()
        await asyncio.wait_for(running, timeout=30)

        assert not await exists(broker, name)
        assert not await exists(broker, name + ".dead")
    finally:
        runtime.stop()
        channel = await broker.channel()
        for queue_name in (
            name,
            name + ".dead",
            f"{PREFIX}.shared-{PREFIX}",
            f"{PREFIX}.shared-{PREFIX}.dead",
        ):
            await channel.queue_delete(queue_name)
        await channel.close()
