"""The dispatcher's composition root wires every loop, and picks the rate limiter by config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dispatcher_stack import REDIS_URL

from scheduler_application.task_changes import TaskChangeSignal
from scheduler_dispatcher.bootstrap import build_dispatcher
from scheduler_infrastructure.config import DatabaseSettings, RedisSettings, Settings
from scheduler_infrastructure.config.settings import (
    EventPublishSettings,
    EventsSettings,
    WebhookSettings,
)
from scheduler_infrastructure.resources import open_resources

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


async def test_event_retention_zero_keeps_the_log_and_runs_no_loop(tmp_path: Path) -> None:
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'boot.db'}"),
        events=EventsSettings(retention_days=0),
    )
    async with open_resources(settings) as resources:
        dispatcher = build_dispatcher(resources)
        with pytest.raises(StopIteration):
            dispatcher.loop("event-retention")


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
