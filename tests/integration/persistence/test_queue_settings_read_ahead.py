"""On PostgreSQL a task read by id brings its queue's settings in the same statement, so a
trigger's gates do not read them again: three statements per trigger (the task, the run with
its event, the queue message) instead of four. What rides along is the open transaction's
only: a commit or rollback forgets it, and a save in the same transaction replaces it, so a
pause committed by someone else is seen by the next transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, event
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_domain.accounts import Role
from scheduler_domain.queue_settings import QueueSettings
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.tables import queue_settings
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.factory import build_run_queue

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

OWNER = Principal(subject_id="read-ahead-owner", role=Role.USER)
T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def uow_factory(postgres_engine: AsyncEngine) -> AsyncIterator[SqlUnitOfWorkFactory]:
    yield SqlUnitOfWorkFactory(postgres_engine)
    async with postgres_engine.begin() as connection:
        await connection.execute(delete(queue_settings))


def _statements(engine: AsyncEngine) -> tuple[list[str], Any]:
    """The statements sent from now on, and the listener to remove."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(" ".join(str(args[2]).split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen, record


async def test_a_trigger_reads_its_queues_settings_with_its_task_and_a_paused_queue_holds_it(
    postgres_engine: AsyncEngine, uow_factory: SqlUnitOfWorkFactory
) -> None:
    clock = SystemClock()
    queue_name = f"ahead-{id(clock)}"
    task = await TaskService(uow_factory=uow_factory, clock=clock).create(
        {"name": f"read-ahead-{queue_name}", "executor": "noop", "queue": queue_name},
        principal=OWNER,
    )
    async with build_run_queue(
        backend="postgres", engine=postgres_engine, rabbitmq_url="", redis_url="",
        prefix="readahead", listen=False,
    ) as queue:  # fmt: skip
        relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
        runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
        await runs.trigger(task.id, principal=OWNER)  # statements prepared once
        seen, listener = _statements(postgres_engine)
        try:
            queued = await runs.trigger(task.id, principal=OWNER)
            assert queued.status is RunStatus.QUEUED
            assert not [s for s in seen if s.startswith("SELECT queue_settings.")], seen
            assert len(seen) == 3, seen

            async with uow_factory() as uow:
                await uow.queue_settings.save(
                    QueueSettings(name=queue_name, paused=True, updated_by="op", updated_at=T0)
                )
                await uow.commit()
            seen.clear()
            held = await runs.trigger(task.id, principal=OWNER)
            # The pause rode along with the task: the run waits, and still no second read.
            assert held.status is RunStatus.PENDING
            assert not [s for s in seen if s.startswith("SELECT queue_settings.")], seen
        finally:
            event.remove(postgres_engine.sync_engine, "before_cursor_execute", listener)


async def test_what_rode_along_is_forgotten_at_the_commit_and_replaced_by_a_save(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    clock = SystemClock()
    queue_name = f"forget-{id(clock)}"
    task = await TaskService(uow_factory=uow_factory, clock=clock).create(
        {"name": f"read-ahead-{queue_name}", "executor": "noop", "queue": queue_name},
        principal=OWNER,
    )
    paused = QueueSettings(name=queue_name, paused=True, updated_by="op", updated_at=T0)
    async with uow_factory() as uow:
        assert await uow.tasks.get(task.id) is not None
        assert await uow.queue_settings.get_many([queue_name]) == []  # as read with the task
        await uow.commit()
        # Someone else pauses the queue meanwhile; this unit of work's next transaction sees it.
        async with uow_factory() as other:
            await other.queue_settings.save(paused)
            await other.commit()
        [seen] = await uow.queue_settings.get_many([queue_name])
        assert seen.paused

        # In one transaction, a save replaces what rode along with the task.
        assert await uow.tasks.get(task.id) is not None
        resumed = QueueSettings(name=queue_name, paused=False, updated_by="op", updated_at=T0)
        await uow.queue_settings.save(resumed)
        [now] = await uow.queue_settings.get_many([queue_name])
        assert not now.paused
        await uow.rollback()
        [after_rollback] = await uow.queue_settings.get_many([queue_name])
        assert after_rollback.paused

    # get_many of tasks brings the settings too.
    async with uow_factory() as uow:
        [again] = await uow.tasks.get_many([task.id])
        assert again.id == task.id
        [riding] = await uow.queue_settings.get_many([queue_name])
        assert riding.paused
