from __future__ import annotations

from datetime import timedelta

import pytest
from application_fixtures import START

from scheduler_application.errors import AlreadyExists, Conflict
from scheduler_application.ports.repositories import RunFilter, TaskFilter
from scheduler_application.testing import InMemoryStore, InMemoryUnitOfWorkFactory
from scheduler_domain.accounts import ApiKey, RefreshToken, Role, User
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task


def make_task(name: str = "t", owner: str = "alice", **kw: object) -> Task:
    return Task(
        owner_id=owner,
        name=name,
        executor="noop",
        created_at=START,
        updated_at=START,
        **kw,  # type: ignore[arg-type]
    )


def make_run(task_id: str = "task-1", **kw: object) -> TaskRun:
    values: dict[str, object] = {
        "task_id": task_id,
        "owner_id": "alice",
        "trigger": RunTrigger.MANUAL,
        "scheduled_for": START,
        "created_at": START,
    }
    values.update(kw)
    return TaskRun(**values)  # type: ignore[arg-type]


@pytest.fixture
async def task_1(uow_factory: InMemoryUnitOfWorkFactory) -> Task:
    """The task :func:`make_run`'s runs belong to (a run needs its task, as in the database)."""
    task = make_task("task-1", id="task-1")
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    return task


async def test_commit_publishes_the_transaction_to_the_store(
    uow_factory: InMemoryUnitOfWorkFactory, store: InMemoryStore
) -> None:
    task = make_task()
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        assert store.row("tasks", task.id) is None
        await uow.commit()
    assert store.row("tasks", task.id).name == "t"
    assert store.commits == 1


async def test_leaving_without_commit_discards_the_work(
    uow_factory: InMemoryUnitOfWorkFactory, store: InMemoryStore
) -> None:
    async with uow_factory() as uow:
        await uow.tasks.add(make_task())
    assert store.rows("tasks") == []
    assert store.commits == 0
    assert store.rollbacks == 1


async def test_an_exception_inside_the_block_rolls_back(
    uow_factory: InMemoryUnitOfWorkFactory, store: InMemoryStore
) -> None:
    async def add_then_fail() -> None:
        async with uow_factory() as uow:
            await uow.tasks.add(make_task())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await add_then_fail()
    assert store.rows("tasks") == []


async def test_a_transaction_reads_its_own_writes_before_commit(
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    task = make_task()
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        assert (await uow.tasks.get(task.id)) is not None
        async with uow_factory() as other:
            assert await other.tasks.get(task.id) is None


async def test_mutating_a_returned_object_without_update_changes_nothing(
    uow_factory: InMemoryUnitOfWorkFactory, store: InMemoryStore
) -> None:
    task = make_task()
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        task.description = "changed after add"
        loaded = await uow.tasks.get(task.id)
        assert loaded is not None
        loaded.description = "changed without update"
        await uow.commit()
    assert store.row("tasks", task.id).description == ""


async def test_task_name_is_unique_per_owner(uow_factory: InMemoryUnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        await uow.tasks.add(make_task("same"))
        await uow.tasks.add(make_task("same", owner="bob"))
        with pytest.raises(AlreadyExists) as error:
            await uow.tasks.add(make_task("same"))
    assert error.value.field == "name"


async def test_run_slot_and_idempotency_key_are_unique(
    uow_factory: InMemoryUnitOfWorkFactory,
    task_1: Task,
) -> None:
    async with uow_factory() as uow:
        await uow.runs.add(make_run(idempotency_key="k"))
        with pytest.raises(AlreadyExists) as slot:
            await uow.runs.add(make_run())
        with pytest.raises(AlreadyExists) as key:
            await uow.runs.add(make_run(attempt=2, idempotency_key="k"))
        await uow.runs.add(make_run(attempt=2, idempotency_key="other"))
    assert slot.value.field == "scheduled_for"
    assert key.value.field == "idempotency_key"


async def test_uniqueness_is_rechecked_at_commit_against_concurrent_commits(
    uow_factory: InMemoryUnitOfWorkFactory, task_1: Task, store: InMemoryStore
) -> None:
    first, second = uow_factory(), uow_factory()
    async with first, second:
        await first.runs.add(make_run(idempotency_key="k"))
        await second.runs.add(make_run(attempt=2, idempotency_key="k"))
        await first.commit()
        with pytest.raises(AlreadyExists):
            await second.commit()
    assert len(store.rows("runs")) == 1


async def test_username_and_api_key_prefix_and_token_hash_are_unique(
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    def user() -> User:
        return User(
            username="ann", password_hash="h", role=Role.USER, created_at=START, updated_at=START
        )

    def key() -> ApiKey:
        return ApiKey(
            name="k",
            prefix="sk_abc",
            secret_hash="h",
            owner_id="o",
            role=Role.USER,
            created_at=START,
        )

    def token() -> RefreshToken:
        return RefreshToken(
            user_id="u",
            family_id="f",
            token_hash="th",
            created_at=START,
            expires_at=START + timedelta(days=1),
        )

    async with uow_factory() as uow:
        await uow.users.add(user())
        await uow.api_keys.add(key())
        await uow.refresh_tokens.add(token())
        with pytest.raises(AlreadyExists) as username:
            await uow.users.add(user())
        with pytest.raises(AlreadyExists) as prefix:
            await uow.api_keys.add(key())
        with pytest.raises(AlreadyExists) as token_hash:
            await uow.refresh_tokens.add(token())
    assert username.value.field == "username"
    assert prefix.value.field == "prefix"
    assert token_hash.value.field == "token_hash"


async def test_update_with_an_old_version_is_a_conflict(
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    task = make_task()
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    async with uow_factory() as uow:
        loaded = await uow.tasks.get(task.id)
        assert loaded is not None
        loaded.version = 2
        await uow.tasks.update(loaded, expected_version=1)
        with pytest.raises(Conflict):
            await uow.tasks.update(loaded, expected_version=1)


async def test_concurrent_writers_of_one_row_conflict_at_commit(
    uow_factory: InMemoryUnitOfWorkFactory, store: InMemoryStore
) -> None:
    task = make_task()
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    first, second = uow_factory(), uow_factory()
    async with first, second:
        for uow, description in ((first, "first"), (second, "second")):
            loaded = await uow.tasks.get(task.id)
            assert loaded is not None
            loaded.description = description
            loaded.version = 2
            await uow.tasks.update(loaded, expected_version=1)
        await first.commit()
        with pytest.raises(Conflict):
            await second.commit()
    assert store.row("tasks", task.id).description == "first"


async def test_set_next_run_at_does_not_conflict_with_a_concurrent_edit(
    uow_factory: InMemoryUnitOfWorkFactory, store: InMemoryStore
) -> None:
    task = make_task()
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    dispatcher, user = uow_factory(), uow_factory()
    async with dispatcher, user:
        await dispatcher.tasks.set_next_run_at(task.id, START + timedelta(hours=1))
        edited = await user.tasks.get(task.id)
        assert edited is not None
        edited.description = "edited"
        edited.version = 2
        await user.tasks.update(edited, expected_version=1)
        await user.commit()
        await dispatcher.commit()
    stored = store.row("tasks", task.id)
    assert (stored.description, stored.next_run_at) == ("edited", START + timedelta(hours=1))
    assert stored.version == 2


async def test_claim_takes_a_queued_run_once_and_bumps_the_token(
    uow_factory: InMemoryUnitOfWorkFactory,
    task_1: Task,
) -> None:
    run = make_run(status=RunStatus.QUEUED)
    async with uow_factory() as uow:
        await uow.runs.add(run)
        first = await uow.runs.claim(run.id, worker_id="w1", now=START, lease=timedelta(seconds=30))
        again = await uow.runs.claim(run.id, worker_id="w2", now=START, lease=timedelta(seconds=30))
    assert first is not None
    assert again is None
    assert (first.status, first.worker_id, first.version) == (RunStatus.RUNNING, "w1", 2)
    assert first.lease_expires_at == START + timedelta(seconds=30)


async def test_claim_refuses_a_run_that_is_not_queued(
    uow_factory: InMemoryUnitOfWorkFactory,
    task_1: Task,
) -> None:
    pending = make_run()
    async with uow_factory() as uow:
        await uow.runs.add(pending)
        claimed = await uow.runs.claim(pending.id, worker_id="w", now=START, lease=timedelta(1))
    assert claimed is None


async def test_claim_next_takes_highest_priority_then_oldest(
    uow_factory: InMemoryUnitOfWorkFactory,
    task_1: Task,
) -> None:
    """Oldest by creation, as the SQL adapters order it (not by when it was queued)."""
    second = timedelta(seconds=1)
    low = make_run(status=RunStatus.QUEUED, priority=1, queued_at=START)
    high_late = make_run(
        status=RunStatus.QUEUED, priority=9, created_at=START + 2 * second, queued_at=START
    )
    high_early = make_run(
        status=RunStatus.QUEUED,
        priority=9,
        created_at=START + second,
        queued_at=START + 3 * second,
    )
    other_queue = make_run(status=RunStatus.QUEUED, priority=9, queue="gpu", queued_at=START)
    names = {low.id: "low", high_late.id: "high_late", high_early.id: "high_early"}
    async with uow_factory() as uow:
        for number, run in enumerate((low, high_late, high_early, other_queue)):
            run.scheduled_for = START + number * second
            await uow.runs.add(run)
        order = []
        for _ in range(4):
            claimed = await uow.runs.claim_next(
                queues=["default"], worker_id="w", now=START, lease=timedelta(seconds=30)
            )
            order.append(names[claimed.id] if claimed else None)
    assert order == ["high_early", "high_late", "low", None]


async def test_renew_lease_needs_the_current_token_and_a_running_run(
    uow_factory: InMemoryUnitOfWorkFactory,
    task_1: Task,
) -> None:
    run = make_run(status=RunStatus.QUEUED)
    lease = timedelta(seconds=30)
    async with uow_factory() as uow:
        await uow.runs.add(run)
        claimed = await uow.runs.claim(run.id, worker_id="w", now=START, lease=lease)
        assert claimed is not None
        later = START + timedelta(seconds=10)
        renew = {"now": later, "lease": lease}
        assert not await uow.runs.renew_lease(
            run.id, worker_id="another", token=claimed.version, **renew
        )
        assert await uow.runs.renew_lease(run.id, worker_id="w", token=claimed.version, **renew)
        assert not await uow.runs.renew_lease(run.id, worker_id="w", token=1, **renew)
        renewed = await uow.runs.get(run.id)
    assert renewed is not None
    assert renewed.lease_expires_at == later + lease


async def test_due_queries_skip_rows_another_transaction_has_locked(
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    async with uow_factory() as uow:
        for name in ("a", "b", "c"):
            await uow.tasks.add(make_task(name, next_run_at=START))
        await uow.commit()
    first, second = uow_factory(), uow_factory()
    async with first, second:
        mine = {t.name for t in await first.tasks.due(START, limit=2)}
        theirs = {t.name for t in await second.tasks.due(START, limit=5)}
    assert mine.isdisjoint(theirs)
    assert mine | theirs == {"a", "b", "c"}
    async with uow_factory() as uow:
        assert len(await uow.tasks.due(START, limit=5)) == 3  # locks went with the transactions


async def test_task_list_pages_with_opaque_cursors(uow_factory: InMemoryUnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        for i in range(5):
            await uow.tasks.add(make_task(f"t{i}"))
        await uow.tasks.add(make_task("bobs", owner="bob"))
        await uow.commit()
    seen: list[str] = []
    ids: list[str] = []
    cursor = None
    async with uow_factory() as uow:
        while True:
            page = await uow.tasks.list(TaskFilter(owner_id="alice"), limit=2, cursor=cursor)
            seen += [t.name for t in page.items]
            ids += [t.id for t in page.items]
            if page.next_cursor is None:
                break
            assert page.next_cursor not in {t.id for t in page.items}  # opaque, not an id
            cursor = page.next_cursor
    assert sorted(seen) == [f"t{i}" for i in range(5)]  # each exactly once
    assert ids == sorted(ids)  # in id order (UUIDv7: creation order, to the millisecond)


async def test_run_list_is_newest_first_across_pages(
    uow_factory: InMemoryUnitOfWorkFactory,
    task_1: Task,
) -> None:
    async with uow_factory() as uow:
        for i in range(5):
            await uow.runs.add(
                make_run(
                    scheduled_for=START + timedelta(minutes=i),
                    created_at=START + timedelta(minutes=i),
                )
            )
        await uow.commit()
    async with uow_factory() as uow:
        first = await uow.runs.list(RunFilter(), limit=3)
        second = await uow.runs.list(RunFilter(), limit=3, cursor=first.next_cursor)
    minutes = [
        int((r.created_at - START).total_seconds() // 60) for r in first.items + second.items
    ]
    assert minutes == [4, 3, 2, 1, 0]
    assert second.next_cursor is None


async def test_deleting_a_task_removes_its_runs_and_their_events(
    uow_factory: InMemoryUnitOfWorkFactory, store: InMemoryStore
) -> None:
    task = make_task()
    run = make_run(task.id)
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        await uow.runs.add(run)
        await uow.events.add(run.created_event(actor="test"))
        await uow.commit()
    async with uow_factory() as uow:
        await uow.tasks.delete(task.id)
        await uow.commit()
    assert store.rows("tasks") == store.rows("runs") == store.rows("events") == []
