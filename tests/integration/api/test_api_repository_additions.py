"""The repository methods the API added to the ports (queue_names, queue_activity, mark_used,
revoke_for_user), proven on SQLite, PostgreSQL and the in-memory fakes alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_harness import wipe
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.ports.repositories import QueueActivity
from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_application.testing import InMemoryStore, InMemoryUnitOfWorkFactory
from scheduler_domain.accounts import RefreshToken, Role, User
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
UowFactory = Callable[[], UnitOfWork]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def backend(request: pytest.FixtureRequest) -> AsyncEngine | None:
    """A migrated engine, or None for the in-memory fakes (sync: getfixturevalue needs it)."""
    if request.param == "memory":
        return None
    engine: AsyncEngine = request.getfixturevalue(f"{request.param}_engine")
    return engine


@pytest.fixture
async def factory(backend: AsyncEngine | None) -> AsyncIterator[UowFactory]:
    if backend is None:
        yield InMemoryUnitOfWorkFactory(InMemoryStore())
        return
    yield SqlUnitOfWorkFactory(backend)
    await wipe(backend)


def task(queue: str, name: str) -> Task:
    return Task(owner_id="o", name=name, executor="noop", queue=queue, created_at=T0, updated_at=T0)


def run(owner: Task, offset: int, **values: Any) -> TaskRun:
    return TaskRun(
        task_id=owner.id,
        owner_id=owner.owner_id,
        trigger=RunTrigger.MANUAL,
        scheduled_for=T0 + timedelta(seconds=offset),
        created_at=values.pop("created_at", T0),
        queue=owner.queue,
        **values,
    )


async def test_queue_names_are_distinct_and_sorted(factory: UowFactory) -> None:
    async with factory() as uow:
        assert await uow.tasks.queue_names() == []
    named = [("a", "reports"), ("b", "default"), ("c", "reports"), ("d", "zeta"), ("e", "a.b")]
    named += [(f"bulk-{i}", "default") for i in range(20)]
    async with factory() as uow:
        for name, queue in named:
            await uow.tasks.add(task(queue, name))
        await uow.commit()

    async with factory() as uow:
        assert await uow.tasks.queue_names() == ["a.b", "default", "reports", "zeta"]


async def test_queue_activity_counts_live_and_recent_runs(factory: UowFactory) -> None:
    reports, default = task("reports", "r"), task("default", "d")
    since = T0 + timedelta(minutes=10)
    recent = since + timedelta(seconds=5)
    async with factory() as uow:
        await uow.tasks.add(reports)
        await uow.tasks.add(default)
        for item in (
            run(reports, 1),  # pending, old
            run(reports, 2, status=RunStatus.QUEUED, queued_at=T0, created_at=recent),
            run(reports, 6, status=RunStatus.QUEUED, queued_at=recent, created_at=recent),
            run(reports, 3, status=RunStatus.RUNNING, created_at=recent),
            run(reports, 4, status=RunStatus.SUCCEEDED, finished_at=recent),  # old, finished now
            run(default, 5, status=RunStatus.FAILED, finished_at=T0),  # nothing recent
        ):
            await uow.runs.add(item)
        await uow.commit()

    async with factory() as uow:
        activity = await uow.runs.queue_activity(since)

    assert activity == [
        QueueActivity(
            queue="reports",
            pending=1,
            queued=2,
            running=1,
            created=3,
            finished=1,
            oldest_queued_at=T0,
        )
    ]


async def test_mark_used_spends_a_token_exactly_once(factory: UowFactory) -> None:
    user = User(username="alice", password_hash="h", role=Role.USER, created_at=T0, updated_at=T0)
    token = RefreshToken(
        user_id=user.id,
        family_id="f",
        token_hash="digest",
        created_at=T0,
        expires_at=T0 + timedelta(days=1),
    )
    async with factory() as uow:
        await uow.users.add(user)
        await uow.refresh_tokens.add(token)
        await uow.commit()

    async with factory() as uow:
        first = await uow.refresh_tokens.mark_used(token.id, now=T0)
        await uow.commit()
    async with factory() as uow:
        second = await uow.refresh_tokens.mark_used(token.id, now=T0)
        stored = await uow.refresh_tokens.get_by_hash("digest")

    assert (first, second) == (True, False)
    assert stored is not None
    assert stored.used_at == T0


async def test_revoke_for_user_revokes_every_family(factory: UowFactory) -> None:
    alice = User(username="alice", password_hash="h", role=Role.USER, created_at=T0, updated_at=T0)
    bob = User(username="bob", password_hash="h", role=Role.USER, created_at=T0, updated_at=T0)
    tokens = [
        RefreshToken(
            user_id=owner.id,
            family_id=family,
            token_hash=f"{owner.username}-{family}",
            created_at=T0,
            expires_at=T0 + timedelta(days=1),
        )
        for owner, family in ((alice, "f1"), (alice, "f2"), (bob, "f3"))
    ]
    async with factory() as uow:
        await uow.users.add(alice)
        await uow.users.add(bob)
        for item in tokens:
            await uow.refresh_tokens.add(item)
        await uow.commit()

    async with factory() as uow:
        revoked = await uow.refresh_tokens.revoke_for_user(alice.id, now=T0)
        await uow.commit()
    async with factory() as uow:
        bobs = await uow.refresh_tokens.get_by_hash("bob-f3")

    assert revoked == 2
    assert bobs is not None
    assert bobs.revoked_at is None


async def test_latest_statuses_are_the_newest_runs_per_task(factory: UowFactory) -> None:
    busy, quiet, idle = task("default", "busy"), task("default", "quiet"), task("default", "idle")
    runs = [
        run(busy, i, status=status, created_at=T0 + timedelta(seconds=i))
        for i, status in enumerate(
            [RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.RUNNING, RunStatus.QUEUED]
        )
    ]
    only = run(quiet, 9, status=RunStatus.DEAD_LETTERED)
    async with factory() as uow:
        for item in (busy, quiet, idle):
            await uow.tasks.add(item)
        for item in (*runs, only):
            await uow.runs.add(item)
        await uow.commit()

    async with factory() as uow:
        latest = await uow.runs.latest_statuses([busy.id, quiet.id, idle.id], per_task=3)

    assert latest == {
        busy.id: [
            (runs[3].id, RunStatus.QUEUED),
            (runs[2].id, RunStatus.RUNNING),
            (runs[1].id, RunStatus.SUCCEEDED),
        ],
        quiet.id: [(only.id, RunStatus.DEAD_LETTERED)],
    }
