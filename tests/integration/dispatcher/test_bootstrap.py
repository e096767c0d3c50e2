"""The dispatcher's composition root wires every loop, and picks the rate limiter by config."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from dispatcher_stack import REDIS_URL

from scheduler_application.ports.queue import RunMessage
from scheduler_application.tasks.changes import TaskChangeSignal
from scheduler_dispatcher.bootstrap import build_dispatcher
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker, WorkerStatus
from scheduler_infrastructure.config import DatabaseSettings, RedisSettings, Settings
from scheduler_infrastructure.config.settings import (
    EventPublishSettings,
    EventsSettings,
    RetentionSettings,
    WebhookSettings,
)
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.resources import build_relay, open_resources

pytestmark = pytest.mark.timeout(60)


async def test_build_dispatcher_wires_every_loop_and_stops_cleanly(tmp_path: Path) -> None:
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'boot.db'}"),
        redis=RedisSettings(url=REDIS_URL),
    )
    signal = TaskChangeSignal()
    async with open_resources(settings) as resources:
        dispatcher = build_dispatcher(resources, task_changes=signal)
        names = [
            dispatcher.loop(name).name
            for name in (
                "scheduler",
                "dependencies",
                "relay",
                "requeue",
                "reaper",
                "retention",
                "event-retention",
                "webhooks",
            )
        ]
        assert names == [
            "scheduler",
            "dependencies",
            "relay",
            "requeue",
            "reaper",
            "retention",
            "event-retention",
            "webhooks",
        ]
        with pytest.raises(StopIteration):
            dispatcher.loop("event-topic")  # events.publish.backend is none
        with pytest.raises(StopIteration):
            dispatcher.loop("task-changes")  # LISTEN is PostgreSQL's
        signal.notify()  # reaches the scheduler loop's wake without error
        task = asyncio.create_task(dispatcher.run())
        await asyncio.wait_for(dispatcher.wait_started(), timeout=5)
        dispatcher.stop()
        await asyncio.wait_for(task, timeout=10)


@pytest.mark.postgres
async def test_on_postgres_the_dispatcher_also_listens_for_task_changes(postgres_url: str) -> None:
    settings = Settings(database=DatabaseSettings(url=postgres_url))
    async with open_resources(settings) as resources:
        dispatcher = build_dispatcher(resources)
        assert dispatcher.loop("task-changes").name == "task-changes"
        task = asyncio.create_task(dispatcher.run())
        await asyncio.wait_for(dispatcher.wait_started(), timeout=5)
        await asyncio.sleep(0.2)
        dispatcher.stop()
        await asyncio.wait_for(task, timeout=10)


async def test_a_dispatcher_runs_on_the_relay_it_is_given_and_leaves_closing_it(
    tmp_path: Path,
) -> None:
    """``scheduler run`` builds one relay for the process and hands it to the API and the
    dispatcher: the dispatcher's loops use it, and it is closed by the launcher once every
    component stopped, not by the dispatcher."""
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}")
    )
    async with open_resources(settings) as resources:
        relay = build_relay(resources)
        relayed = asyncio.Event()
        closed: list[str] = []
        relay_pending = relay.relay_pending

        async def counted(limit: int = 100) -> list[RunMessage]:
            relayed.set()
            return await relay_pending(limit)

        async def aclose() -> None:
            closed.append("closed")

        relay.relay_pending = counted  # type: ignore[method-assign]
        relay.aclose = aclose  # type: ignore[method-assign]

        dispatcher = build_dispatcher(resources, relay=relay)
        task = asyncio.create_task(dispatcher.run())
        await asyncio.wait_for(relayed.wait(), timeout=5)  # its relay loop is the given relay's
        dispatcher.stop()
        await asyncio.wait_for(task, timeout=10)
        assert closed == []


async def test_a_publish_backend_adds_the_event_topic_loop(tmp_path: Path) -> None:
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'boot.db'}"),
        events=EventsSettings(
            publish=EventPublishSettings(backend="redis"),
            webhooks=WebhookSettings(enabled=False),
        ),
    )
    async with open_resources(settings) as resources:
        dispatcher = build_dispatcher(resources)
        assert dispatcher.loop("event-topic").name == "event-topic"
        with pytest.raises(StopIteration):
            dispatcher.loop("webhooks")


async def test_event_retention_zero_keeps_the_log_and_runs_no_loop(tmp_path: Path) -> None:
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'boot.db'}"),
        events=EventsSettings(retention_days=0),
    )
    async with open_resources(settings) as resources:
        dispatcher = build_dispatcher(resources)
        with pytest.raises(StopIteration):
            dispatcher.loop("event-retention")


async def test_the_retention_loop_retires_old_workers_and_deletes_old_runs(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = Settings(
        database=DatabaseSettings(url=url), retention=RetentionSettings(interval_seconds=0.1)
    )
    async with open_resources(settings) as resources:
        now = resources.clock.now()
        long_ago = now - timedelta(days=40)
        gone = Worker(
            name="w2", hostname="h", pid=1, queues=("default",), capacity=1,
            started_at=long_ago, heartbeat_at=long_ago, status=WorkerStatus.OFFLINE,
        )  # fmt: skip
        live = Worker(
            name="w2", hostname="h", pid=2, queues=("default",), capacity=1,
            started_at=now, heartbeat_at=now,
        )  # fmt: skip
        task = Task(owner_id="o", name="t", executor="noop", created_at=long_ago, updated_at=now)
        old = TaskRun(
            task_id=task.id, owner_id="o", trigger=RunTrigger.MANUAL, scheduled_for=long_ago,
            created_at=long_ago, status=RunStatus.SUCCEEDED, finished_at=long_ago,
            worker_id=gone.id,
        )  # fmt: skip
        async with resources.uow_factory() as uow:
            await uow.workers.add(gone)
            await uow.workers.add(live)
            await uow.tasks.add(task)
            await uow.runs.add(old)
            await uow.commit()

        dispatcher = build_dispatcher(resources)
        running = asyncio.create_task(dispatcher.run())
        try:

            async def retired() -> bool:
                async with resources.uow_factory() as uow:
                    workers = {w.id for w in await uow.workers.list()}
                    return workers == {live.id} and await uow.runs.get(old.id) is None

            async with asyncio.timeout(20):
                while not await retired():
                    await asyncio.sleep(0.1)
            async with resources.uow_factory() as uow:
                assert await uow.runs.count_by_status() == {RunStatus.SUCCEEDED: 1}
        finally:
            dispatcher.stop()
            await asyncio.wait_for(running, timeout=10)
