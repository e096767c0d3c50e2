"""One contract for the repositories and the unit of work, run on SQLite, on PostgreSQL and on
the in-memory fakes the unit tests use (``scheduler_application.testing``): what the ports
promise, proven against real databases, and the fakes held to the same promises so that a unit
test on them means what it would mean on a database. Tests that read the database themselves
(or the SQL lease store) run on the two databases only."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.errors import AlreadyExists, Conflict, NotFound, Unavailable
from scheduler_application.ports.repositories import EventQuery, RunFilter, TaskFilter
from scheduler_domain.accounts import ApiKey, RefreshToken, Role, User
from scheduler_domain.concurrency import ConcurrencyPolicy
from scheduler_domain.errors import ValidationError
from scheduler_domain.events import LOG_START, EventRecord, SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.ids import new_id
from scheduler_domain.misfire import MisfireKind, MisfirePolicy
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import parse_schedule
from scheduler_domain.status import RunStatus
from scheduler_domain.task import DispatchStrategy, Task, TriggerRule
from scheduler_domain.template import ScheduleBounds, Template
from scheduler_domain.worker import Worker, WorkerStatus
from scheduler_infrastructure.persistence.leases import SqlLeaseStore
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWork, SqlUnitOfWorkFactory

T0 = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
LEASE = timedelta(seconds=30)
OWNER = "owner-1"


# -- builders ----------------------------------------------------------------------------------


def make_task(**overrides: Any) -> Task:
    values: dict[str, Any] = {
        "owner_id": OWNER,
        "name": f"task-{new_id()[-12:]}",
        "executor": "noop",
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    return Task(**values)


def make_run(task: Task, **overrides: Any) -> TaskRun:
    values: dict[str, Any] = {
        "task_id": task.id,
        "owner_id": task.owner_id,
        "trigger": RunTrigger.MANUAL,
        "scheduled_for": T0,
        "created_at": T0,
        "queue": task.queue,
    }
    values.update(overrides)
    if "scheduled_for" not in overrides:
        values["scheduled_for"] = values["created_at"] + timedelta(microseconds=_unique())
    return TaskRun(**values)


_counter = iter(range(1, 10**9))


def _unique() -> int:
    return next(_counter)


def queued_run(task: Task, **overrides: Any) -> TaskRun:
    overrides.setdefault("queued_at", overrides.get("created_at", T0))
    return make_run(task, status=RunStatus.QUEUED, **overrides)


def running_run(task: Task, *, lease_expires_at: datetime, **overrides: Any) -> TaskRun:
    return make_run(
        task,
        status=RunStatus.RUNNING,
        worker_id=overrides.pop("worker_id", "w-1"),
        started_at=T0,
        heartbeat_at=T0,
        lease_expires_at=lease_expires_at,
        **overrides,
    )


def make_user(**overrides: Any) -> User:
    values: dict[str, Any] = {
        "username": f"user-{new_id()[-8:]}",
        "password_hash": "$argon2id$v=19$hash",
        "role": Role.USER,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    return User(**values)


@asynccontextmanager
async def committed(uow_factory: SqlUnitOfWorkFactory) -> AsyncIterator[SqlUnitOfWork]:
    """A unit of work that commits when the block succeeds."""
    async with uow_factory() as uow:
        yield uow
        await uow.commit()


async def save(uow_factory: SqlUnitOfWorkFactory, *objects: object) -> None:
    async with committed(uow_factory) as uow:
        for obj in objects:
            if isinstance(obj, Task):
                await uow.tasks.add(obj)
            elif isinstance(obj, TaskRun):
                await uow.runs.add(obj)
            elif isinstance(obj, User):
                await uow.users.add(obj)
            else:
                raise TypeError(obj)


def ids(items: list[Any]) -> list[str]:
    return [item.id for item in items]


def postgres_only(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks (SKIP LOCKED) are PostgreSQL's; SQLite serialises writers")


# -- tasks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {
            "cron": "*/5 9-17 * * 1-5",
            "timezone": "Europe/Paris",
            "dst_gap": "skip",
            "dst_fold": "both",
        },
        {"cron": "30 */15 * * * *", "timezone": "UTC", "dst_gap": "shift", "dst_fold": "first"},
        {"interval_seconds": 90, "anchor": "2030-01-01T00:00:00.250000Z"},
        {"at": "2030-06-01T12:00:00.000001Z"},
        None,
    ],
    ids=["cron", "cron-seconds", "interval", "once", "manual"],
)
async def test_task_round_trips_every_field(
    uow_factory: SqlUnitOfWorkFactory, spec: dict[str, Any] | None
) -> None:
    upstream_a, upstream_b = make_task(), make_task()
    task = make_task(
        executor="shell",
        params={"argv": ["echo", "héllo"], "env": {"A": "1"}, "output_limit": 4096},
        description="does things",
        schedule=parse_schedule(spec),
        enabled=False,
        queue="reports.eu",
        priority=9,
        labels=frozenset({"gpu", "region=eu"}),
        strategy=DispatchStrategy.LEAST_LOADED,
        timeout=timedelta(minutes=5, microseconds=250),
        retry=RetryPolicy(
            max_attempts=4,
            base_delay=timedelta(seconds=1.5),
            max_delay=timedelta(minutes=10),
            jitter=timedelta(milliseconds=250),
        ),
        concurrency=ConcurrencyPolicy.BUFFER_ONE,
        max_concurrent=3,
        misfire=MisfirePolicy(
            kind=MisfireKind.CATCH_UP, catch_up_cap=7, grace=timedelta(seconds=30.5)
        ),
        spread=timedelta(seconds=12.5),
        rate_limit=RateLimit.parse("5/10s"),
        depends_on=(upstream_b.id, upstream_a.id),
        trigger_rule=TriggerRule.ONE_SUCCESS,
        next_run_at=T0 + timedelta(hours=1, microseconds=7),
        template_id="template-1",
        template_version=4,
        template_params={"city": "Zürich", "stops": [1, None]},
        version=3,
    )
    await save(uow_factory, upstream_a, upstream_b, task)

    async with uow_factory() as uow:
        assert await uow.tasks.get(task.id) == task
        assert await uow.tasks.get_by_name(OWNER, task.name) == task
        assert await uow.tasks.get_by_name("someone-else", task.name) is None
        assert await uow.tasks.get("missing") is None


async def test_tasks_with_a_name_are_every_owners(uow_factory: SqlUnitOfWorkFactory) -> None:
    mine = make_task(name="extract")
    theirs = make_task(name="extract", owner_id="someone-else")
    await save(uow_factory, mine, theirs, make_task(name="extract-2"))

    async with uow_factory() as uow:
        assert sorted(ids(await uow.tasks.with_name("extract"))) == sorted([mine.id, theirs.id])
        assert await uow.tasks.with_name("missing") == []


async def test_task_defaults_round_trip(uow_factory: SqlUnitOfWorkFactory) -> None:
    task = make_task()
    await save(uow_factory, task)
    async with uow_factory() as uow:
        stored = await uow.tasks.get(task.id)
    assert stored == task
    assert stored is not None
    assert stored.rate_limit is None
    assert stored.timeout is None
    assert stored.depends_on == ()


async def test_get_many_keeps_the_order_asked_and_drops_missing(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    first, second, third = make_task(), make_task(), make_task()
    await save(uow_factory, first, second, third)
    async with uow_factory() as uow:
        found = await uow.tasks.get_many([third.id, "missing", first.id, third.id])
        assert ids(found) == [third.id, first.id]
        assert await uow.tasks.get_many([]) == []
        # One id (a statement of its own on PostgreSQL): the same task as get, asked twice or not.
        assert await uow.tasks.get_many([second.id, second.id]) == [await uow.tasks.get(second.id)]
        assert await uow.tasks.get_many(["missing"]) == []


async def test_task_name_is_unique_per_team_and_the_transaction_survives(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    original = make_task(name="nightly")  # in its owner's personal team
    await save(uow_factory, original)

    async with committed(uow_factory) as uow:
        with pytest.raises(AlreadyExists) as caught:
            await uow.tasks.add(make_task(name="nightly"))
        assert caught.value.field == "name"
        with pytest.raises(AlreadyExists) as team_mate:  # another creator, the same team
            await uow.tasks.add(make_task(name="nightly", owner_id="owner-2", team_id=OWNER))
        assert team_mate.value.field == "name"
        other_owner = make_task(name="nightly", owner_id="owner-2")
        await uow.tasks.add(other_owner)
        same_owner_other_team = make_task(name="nightly", team_id="team-x")
        await uow.tasks.add(same_owner_other_team)

    async with uow_factory() as uow:
        assert await uow.tasks.get(other_owner.id) == other_owner
        assert await uow.tasks.get_in_team("team-x", "nightly") == same_owner_other_team
        assert await uow.tasks.get_in_team(OWNER, "nightly") == original
        assert await uow.tasks.get_in_team("team-y", "nightly") is None
        assert await uow.tasks.get_by_name(OWNER, "nightly") == min(
            (original, same_owner_other_team), key=lambda t: t.id
        )


async def test_adding_a_task_twice_names_the_id(uow_factory: SqlUnitOfWorkFactory) -> None:
    task = make_task()
    await save(uow_factory, task)
    async with uow_factory() as uow:
        with pytest.raises(AlreadyExists) as caught:
            await uow.tasks.add(task)
    assert caught.value.field == "id"


async def test_task_update_is_conditional_on_the_version_read(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    upstream = make_task()
    task = make_task(depends_on=(upstream.id,))
    await save(uow_factory, upstream, task)

    async with committed(uow_factory) as uow:
        current = await uow.tasks.get(task.id)
        assert current is not None
        current.description = "edited"
        current.priority = 1
        current.depends_on = ()
        current.next_run_at = T0 + timedelta(days=1)
        current.touch(T0 + SECOND)
        current.version = 2
        await uow.tasks.update(current, expected_version=1)

    async with uow_factory() as uow:
        stored = await uow.tasks.get(task.id)
        assert stored == current
        assert stored is not None
        assert stored.version == 2
        assert stored.depends_on == ()

        stale = make_task(id=task.id, name=task.name, version=3)
        with pytest.raises(Conflict) as caught:
            await uow.tasks.update(stale, expected_version=1)
        assert caught.value.field == "version"
        with pytest.raises(Conflict):
            await uow.tasks.update(make_task(version=2), expected_version=1)


async def test_renaming_a_task_onto_a_taken_name_leaves_the_unit_of_work_usable(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    taken, task = make_task(name="taken"), make_task(name="free")
    await save(uow_factory, taken, task)

    async with committed(uow_factory) as uow:
        renamed = make_task(id=task.id, name="taken", version=2)
        with pytest.raises(AlreadyExists) as caught:
            await uow.tasks.update(renamed, expected_version=1)
        assert caught.value.field == "name"
        assert await uow.tasks.get(task.id) == task
        await uow.tasks.set_next_run_at(task.id, T0)

    async with uow_factory() as uow:
        stored = await uow.tasks.get(task.id)
        assert stored is not None
        assert stored.name == "free"
        assert stored.next_run_at == T0


async def test_task_list_pages_by_id_with_filters(uow_factory: SqlUnitOfWorkFactory) -> None:
    mine = [make_task(name=f"report-{i}", queue="q1" if i % 2 else "q2") for i in range(5)]
    mine[0].enabled = False
    other = make_task(owner_id="owner-2", name="report-x")
    upper = make_task(name="Report-upper")
    await save(uow_factory, *mine, other, upper)

    async with uow_factory() as uow:
        everything = sorted(ids([*mine, other, upper]))
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await uow.tasks.list(TaskFilter(), limit=3, cursor=cursor)
            seen += ids(page.items)
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == everything
        assert pages == 3

        by_owner = await uow.tasks.list(TaskFilter(owner_id=OWNER), limit=50)
        assert ids(by_owner.items) == sorted(ids([*mine, upper]))
        assert by_owner.next_cursor is None
        by_prefix = await uow.tasks.list(TaskFilter(name_prefix="report-"), limit=50)
        assert ids(by_prefix.items) == sorted(ids([*mine, other]))
        enabled_q1 = await uow.tasks.list(
            TaskFilter(owner_id=OWNER, enabled=True, queue="q1"), limit=50
        )
        assert ids(enabled_q1.items) == sorted(ids([t for t in mine if t.queue == "q1"]))
        disabled = await uow.tasks.list(TaskFilter(enabled=False), limit=50)
        assert ids(disabled.items) == [mine[0].id]

        with pytest.raises(ValidationError) as caught:
            await uow.tasks.list(TaskFilter(), limit=3, cursor="not-a-cursor")
        assert caught.value.field == "cursor"


async def test_deleting_a_task_removes_its_runs_events_decisions_and_edges(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    upstream = make_task()
    task = make_task(depends_on=(upstream.id,))
    run = make_run(task)
    await save(uow_factory, upstream, task, run)
    async with committed(uow_factory) as uow:
        await uow.events.add(run.created_event(actor="test"))
        await uow.decisions.add(
            SlotDecision(task_id=task.id, slot=T0, outcome=SlotOutcome.FIRED, at=T0, run_id=run.id)
        )

    async with committed(uow_factory) as uow:
        await uow.tasks.delete(task.id)
        await uow.tasks.delete("missing")

    async with uow_factory() as uow:
        assert await uow.tasks.get(task.id) is None
        assert await uow.runs.get(run.id) is None
        assert await uow.events.list_for_run(run.id) == []
        assert await uow.decisions.list_for_task(task.id, limit=10) == []
        assert await uow.tasks.dependency_edges() == {}
        assert await uow.tasks.get(upstream.id) == upstream


async def test_due_tasks_next_due_at_and_set_next_run_at(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    now = T0 + timedelta(hours=1)
    late = make_task(next_run_at=now - timedelta(minutes=5))
    just_due = make_task(next_run_at=now)
    later = make_task(next_run_at=now + timedelta(microseconds=1))
    paused = make_task(enabled=False, next_run_at=now - timedelta(hours=1))
    unscheduled = make_task()
    await save(uow_factory, late, just_due, later, paused, unscheduled)

    async with committed(uow_factory) as uow:
        assert ids(await uow.tasks.due(now, limit=10)) == [late.id, just_due.id]
        assert ids(await uow.tasks.due(now, limit=1)) == [late.id]
        assert await uow.tasks.next_due_at() == late.next_run_at

        await uow.tasks.set_next_run_at(late.id, now + timedelta(days=1))
        await uow.tasks.set_next_run_at(just_due.id, None)
        await uow.tasks.set_next_run_at("missing", now)

    async with uow_factory() as uow:
        assert await uow.tasks.due(now, limit=10) == []
        assert await uow.tasks.next_due_at() == later.next_run_at
        advanced = await uow.tasks.get(late.id)
        assert advanced is not None
        assert advanced.next_run_at == now + timedelta(days=1)
        assert advanced.version == late.version


async def test_set_next_run_at_many_advances_each_task_without_a_version_bump(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    now = T0 + timedelta(hours=1)
    first = make_task(next_run_at=now)
    second = make_task(next_run_at=now)
    untouched = make_task(next_run_at=now)
    await save(uow_factory, first, second, untouched)
    async with committed(uow_factory) as uow:
        await uow.tasks.set_next_run_at_many(
            [(first.id, now + timedelta(days=1)), (second.id, None), ("missing", now)]
        )
        await uow.tasks.set_next_run_at_many([])

    async with uow_factory() as uow:
        assert ids(await uow.tasks.due(now, limit=10)) == [untouched.id]
        advanced = await uow.tasks.get(first.id)
        cleared = await uow.tasks.get(second.id)
        assert advanced is not None
        assert cleared is not None
        assert (advanced.next_run_at, advanced.version) == (now + timedelta(days=1), 1)
        assert (cleared.next_run_at, cleared.version) == (None, 1)


async def test_tasks_that_fire_ahead_are_claimed_ahead_and_the_others_at_their_slot(
    uow_factory: SqlUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    """``due(now, ahead_until=…)`` claims a task that fires ahead (concurrency allow, no cap)
    up to ``ahead_until``, any other only once due; ``next_due_at(ahead=…)`` is the earlier of
    the first ahead task's ``next_run_at`` less ``ahead`` and the first other one's."""
    now = T0 + timedelta(hours=1)
    ahead = timedelta(seconds=2)
    soon = make_task(next_run_at=now + timedelta(seconds=1))
    forbid_soon = make_task(
        next_run_at=now + timedelta(seconds=1), concurrency=ConcurrencyPolicy.FORBID
    )
    capped_soon = make_task(next_run_at=now + timedelta(seconds=1), max_concurrent=2)
    forbid_due = make_task(next_run_at=now, concurrency=ConcurrencyPolicy.FORBID)
    too_far = make_task(next_run_at=now + timedelta(seconds=3))
    paused = make_task(enabled=False, next_run_at=now)
    await save(uow_factory, soon, forbid_soon, capped_soon, forbid_due, too_far, paused)
    assert soon.fires_ahead
    assert too_far.fires_ahead
    assert not forbid_soon.fires_ahead
    assert not capped_soon.fires_ahead
    assert not forbid_due.fires_ahead

    async with uow_factory() as uow:
        assert ids(await uow.tasks.due(now, limit=10, ahead_until=now + ahead)) == [
            forbid_due.id,
            soon.id,
        ]
        assert ids(await uow.tasks.due(now, limit=10)) == [forbid_due.id]
        # soon (now + 1 s) less 2 s comes before forbid_due (now), due at its slot.
        assert await uow.tasks.next_due_at(ahead=ahead) == now - timedelta(seconds=1)
        assert await uow.tasks.next_due_at() == now

    async with committed(uow_factory) as uow:
        await uow.tasks.set_next_run_at(soon.id, None)
    async with uow_factory() as uow:
        assert await uow.tasks.next_due_at(ahead=ahead) == now  # forbid_due
        assert await uow.tasks.next_due_at() == now

    async with committed(uow_factory) as uow:
        await uow.tasks.set_next_run_at_many([(forbid_due.id, None), (too_far.id, None)])
    async with uow_factory() as uow:
        assert await uow.tasks.next_due_at(ahead=ahead) == now + timedelta(seconds=1)
        assert await uow.tasks.due(now, limit=10, ahead_until=now + ahead) == []
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SET enable_seqscan = off")
            plan = "\n".join(
                row[0]
                for row in await connection.exec_driver_sql(
                    "EXPLAIN SELECT"
                    " (SELECT min(next_run_at) FROM tasks WHERE enabled = true"
                    " AND concurrency = 'allow' AND max_concurrent IS NULL),"
                    " (SELECT min(next_run_at) FROM tasks WHERE enabled = true"
                    " AND (concurrency != 'allow' OR max_concurrent IS NOT NULL))"
                )
            )
        assert "ix_tasks_due_ahead" in plan, plan
        assert "ix_tasks_due_at_slot" in plan, plan


async def test_next_due_at_is_none_without_enabled_scheduled_tasks(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    await save(uow_factory, make_task(enabled=False, next_run_at=T0), make_task())
    async with uow_factory() as uow:
        assert await uow.tasks.next_due_at() is None


async def test_dependents_and_dependency_edges(uow_factory: SqlUnitOfWorkFactory) -> None:
    extract, clean = make_task(name="extract"), make_task(name="clean")
    load = make_task(name="load", depends_on=(clean.id, extract.id))
    report = make_task(name="report", depends_on=(load.id,))
    await save(uow_factory, extract, clean, load, report)

    async with uow_factory() as uow:
        assert ids(await uow.tasks.dependents(extract.id)) == [load.id]
        dependents = await uow.tasks.dependents(load.id)
        assert dependents == [report]
        assert await uow.tasks.dependents(report.id) == []
        assert await uow.tasks.dependency_edges() == {
            load.id: (clean.id, extract.id),
            report.id: (load.id,),
        }


async def test_due_skips_tasks_another_dispatcher_holds(
    engine: AsyncEngine, uow_factory: SqlUnitOfWorkFactory
) -> None:
    postgres_only(engine)
    tasks = [make_task(next_run_at=T0 + i * SECOND) for i in range(4)]
    await save(uow_factory, *tasks)
    now = T0 + timedelta(hours=1)
    async with uow_factory() as first, uow_factory() as second:
        assert ids(await first.tasks.due(now, limit=2)) == ids(tasks[:2])
        assert ids(await second.tasks.due(now, limit=10)) == ids(tasks[2:])


# -- runs --------------------------------------------------------------------------------------


async def test_run_round_trips_every_field(uow_factory: SqlUnitOfWorkFactory) -> None:
    task = make_task()
    run = make_run(
        task,
        trigger=RunTrigger.RETRY,
        attempt=3,
        retry_of=new_id(),
        idempotency_key="retry:abc",
        status=RunStatus.FAILED,
        queue="q9",
        priority=7,
        not_before=T0 + timedelta(microseconds=1),
        worker_id="worker-7",
        lease_expires_at=None,
        heartbeat_at=T0 + timedelta(microseconds=2),
        queued_at=T0 + timedelta(microseconds=3),
        started_at=T0 + timedelta(microseconds=4),
        finished_at=T0 + timedelta(microseconds=5),
        result={"exit_code": 2, "nested": {"list": [1, 2.5, None, "x"]}},
        error="boom",
        output="line 1\nline 2 ünïcode",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        template_id="template-1",
        template_version=2,
        params={"argv": ["echo", "ünï"]},
        run_params={"who": "ünï", "n": 2.5},
        version=4,
    )
    await save(uow_factory, task, run)
    async with uow_factory() as uow:
        assert await uow.runs.get(run.id) == run
        assert await uow.runs.get_by_idempotency_key(task.id, "retry:abc") == run
        assert await uow.runs.get_by_idempotency_key(task.id, "other") is None
        assert await uow.runs.get("missing") is None


async def test_runs_are_found_by_many_idempotency_keys_in_one_read(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task, other = make_task(), make_task(name="other")
    one = make_run(task, scheduled_for=T0, idempotency_key="manual:a")
    two = make_run(task, scheduled_for=T0 + SECOND, idempotency_key="manual:b")
    elsewhere = make_run(other, scheduled_for=T0, idempotency_key="manual:a")
    await save(uow_factory, task, one, two)
    await save(uow_factory, other, elsewhere)
    async with uow_factory() as uow:
        found = await uow.runs.get_by_idempotency_keys(
            [(task.id, "manual:a"), (task.id, "manual:b"), (task.id, "manual:c"),
             (other.id, "manual:a"), (other.id, "manual:b"), (task.id, "manual:a")]
        )  # fmt: skip
        assert found == {
            (task.id, "manual:a"): one,
            (task.id, "manual:b"): two,
            (other.id, "manual:a"): elsewhere,
        }
        assert await uow.runs.get_by_idempotency_keys([]) == {}


async def test_aware_datetimes_round_trip_exactly_and_come_back_in_utc(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2031, 7, 8, 9, 10, 11, 999999, tzinfo=india)
    task = make_task(next_run_at=local)
    run = make_run(task, created_at=local, scheduled_for=local, not_before=local)
    await save(uow_factory, task, run)
    async with uow_factory() as uow:
        stored_task = await uow.tasks.get(task.id)
        stored_run = await uow.runs.get(run.id)
    assert stored_task is not None
    assert stored_run is not None
    for value in (stored_task.next_run_at, stored_run.scheduled_for, stored_run.not_before):
        assert value == local
        assert value is not None
        assert value.tzinfo is UTC
        assert value.microsecond == 999999
        assert value.hour == 3
        assert value.minute == 40


async def test_a_slot_or_idempotency_key_taken_is_already_exists_and_the_unit_survives(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    first = make_run(task, scheduled_for=T0, idempotency_key="k1")
    await save(uow_factory, task, first)

    async with committed(uow_factory) as uow:
        with pytest.raises(AlreadyExists) as by_slot:
            await uow.runs.add(make_run(task, scheduled_for=T0))
        assert by_slot.value.field == "scheduled_for"
        with pytest.raises(AlreadyExists) as by_key:
            await uow.runs.add(make_run(task, scheduled_for=T0 + SECOND, idempotency_key="k1"))
        assert by_key.value.field == "idempotency_key"
        with pytest.raises(AlreadyExists) as by_id:
            await uow.runs.add(first)
        assert by_id.value.field == "id"
        # The idempotent trigger's follow-up: find the existing run, in the same transaction.
        assert await uow.runs.get_by_idempotency_key(task.id, "k1") == first
        retry = make_run(task, scheduled_for=T0, attempt=2)
        keyless = [make_run(task, scheduled_for=T0 + i * SECOND) for i in range(2, 4)]
        for run in (retry, *keyless):
            await uow.runs.add(run)

    async with uow_factory() as uow:
        assert await uow.runs.get(retry.id) == retry
        assert ids(await uow.runs.active_for_task(task.id)) == ids(
            sorted([first, retry, *keyless], key=lambda r: (r.created_at, r.id))
        )


async def test_a_run_for_a_missing_task_is_not_found(uow_factory: SqlUnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        with pytest.raises(NotFound):
            await uow.runs.add(make_run(make_task()))


async def test_run_update_is_conditional_on_the_version_read(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    run = make_run(task)
    await save(uow_factory, task, run)

    async with committed(uow_factory) as uow:
        current = await uow.runs.get(run.id)
        assert current is not None
        read_version = current.version
        current.mark_queued(now=T0 + SECOND)
        await uow.runs.update(current, expected_version=read_version)

    async with committed(uow_factory) as uow:
        stored = await uow.runs.get(run.id)
        assert stored == current
        assert stored is not None
        stored.cancel(now=T0 + 2 * SECOND, actor="user:1")
        await uow.runs.update(stored, expected_version=read_version)

    async with uow_factory() as uow:
        stale = await uow.runs.get(run.id)
        assert stale is not None
        stale.version = 99
        with pytest.raises(Conflict) as caught:
            await uow.runs.update(stale, expected_version=98)
        assert caught.value.field == "version"
        with pytest.raises(Conflict):
            await uow.runs.update(make_run(task), expected_version=1)
        final = await uow.runs.get(run.id)
        assert final is not None
        assert final.status is RunStatus.CANCELLED


async def test_claim_moves_a_queued_run_to_running_exactly_once(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    queued = queued_run(task)
    pending = make_run(task)
    await save(uow_factory, task, queued, pending)
    now = T0 + timedelta(minutes=1)

    async with committed(uow_factory) as uow:
        claimed = await uow.runs.claim(queued.id, worker_id="w-1", now=now, lease=LEASE)
        assert claimed is not None
        assert claimed.status is RunStatus.RUNNING
        assert claimed.version == queued.version + 1
        assert claimed.worker_id == "w-1"
        assert claimed.started_at == now
        assert claimed.heartbeat_at == now
        assert claimed.lease_expires_at == now + LEASE
        assert await uow.runs.claim(queued.id, worker_id="w-2", now=now, lease=LEASE) is None
        assert await uow.runs.claim(pending.id, worker_id="w-2", now=now, lease=LEASE) is None
        assert await uow.runs.claim("missing", worker_id="w-2", now=now, lease=LEASE) is None

    async with uow_factory() as uow:
        assert await uow.runs.get(queued.id) == claimed


async def test_claim_next_takes_the_highest_priority_then_the_oldest(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    old_low = queued_run(task, priority=1, created_at=T0)
    # Queued before ``old_high`` (a retry's backoff, a paused queue's resume): the order is
    # still by creation, on every adapter.
    new_high = queued_run(task, priority=8, created_at=T0 + 2 * SECOND, queued_at=T0)
    old_high = queued_run(task, priority=8, created_at=T0 + SECOND, queued_at=T0 + 3 * SECOND)
    other_queue = queued_run(task, priority=9, queue="elsewhere")
    not_queued = make_run(task, priority=9)
    await save(uow_factory, task, old_low, new_high, old_high, other_queue, not_queued)
    now = T0 + timedelta(minutes=1)

    claimed: list[str] = []
    async with committed(uow_factory) as uow:
        while run := await uow.runs.claim_next(
            queues=["default", "unused"], worker_id="w-1", now=now, lease=LEASE
        ):
            assert run.status is RunStatus.RUNNING
            assert run.worker_id == "w-1"
            claimed.append(run.id)
        assert await uow.runs.claim_next(queues=[], worker_id="w-1", now=now, lease=LEASE) is None
    assert claimed == [old_high.id, new_high.id, old_low.id]

    async with uow_factory() as uow:
        left = await uow.runs.get(other_queue.id)
        assert left is not None
        assert left.status is RunStatus.QUEUED


async def test_renew_lease_needs_the_current_token_and_a_running_run(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    queued = queued_run(task)
    await save(uow_factory, task, queued)
    now = T0 + timedelta(minutes=1)

    async with committed(uow_factory) as uow:
        claimed = await uow.runs.claim(queued.id, worker_id="w-1", now=now, lease=LEASE)
        assert claimed is not None
        token = claimed.version
        later = now + 10 * SECOND
        renew = {"worker_id": "w-1", "now": later, "lease": LEASE}
        assert not await uow.runs.renew_lease(
            queued.id, worker_id="w-2", token=token, now=later, lease=LEASE
        )
        assert await uow.runs.renew_lease(queued.id, token=token, **renew)
        assert not await uow.runs.renew_lease(queued.id, token=token - 1, **renew)
        assert not await uow.runs.renew_lease("missing", token=token, **renew)

    async with committed(uow_factory) as uow:
        renewed = await uow.runs.get(queued.id)
        assert renewed is not None
        assert renewed.heartbeat_at == later
        assert renewed.lease_expires_at == later + LEASE
        assert renewed.version == token
        renewed.finish(RunStatus.SUCCEEDED, token=token, now=later + SECOND)
        await uow.runs.update(renewed, expected_version=token)

    async with uow_factory() as uow:
        for candidate in (token, token + 1):
            assert not await uow.runs.renew_lease(
                queued.id, worker_id="w-1", token=candidate, now=later, lease=LEASE
            )


async def test_run_list_is_newest_first_with_cursors_and_filters(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task, other_task = make_task(), make_task(owner_id="owner-2")
    runs = [make_run(task, created_at=T0 + i * SECOND) for i in range(5)]
    runs[1].status = RunStatus.QUEUED
    runs[2] = running_run(task, lease_expires_at=T0, created_at=T0 + 2 * SECOND, worker_id="w-9")
    runs[3].trigger = RunTrigger.SCHEDULE
    runs[4].queue = "reports"
    same_instant = make_run(task, created_at=T0 + 4 * SECOND)
    foreign = make_run(other_task, created_at=T0 + 10 * SECOND)
    await save(uow_factory, task, other_task, *runs, same_instant, foreign)

    newest_first = sorted(
        [*runs, same_instant, foreign], key=lambda r: (r.created_at, r.id), reverse=True
    )
    async with uow_factory() as uow:
        seen: list[str] = []
        cursor = None
        while True:
            page = await uow.runs.list(RunFilter(), limit=2, cursor=cursor)
            assert len(page.items) <= 2
            seen += ids(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == ids(newest_first)

        async def listed(run_filter: RunFilter) -> list[str]:
            return ids((await uow.runs.list(run_filter, limit=100)).items)

        mine = [r for r in newest_first if r is not foreign]
        assert await listed(RunFilter(owner_id=OWNER)) == ids(mine)
        assert await listed(RunFilter(task_id=other_task.id)) == [foreign.id]
        assert await listed(
            RunFilter(statuses=frozenset({RunStatus.QUEUED, RunStatus.RUNNING}))
        ) == [runs[2].id, runs[1].id]
        assert await listed(RunFilter(trigger=RunTrigger.SCHEDULE)) == [runs[3].id]
        assert await listed(RunFilter(worker_id="w-9")) == [runs[2].id]
        assert await listed(RunFilter(queue="reports")) == [runs[4].id]
        assert await listed(RunFilter(queue="reports", owner_id="owner-2")) == []
        assert await uow.runs.count(RunFilter(queue="reports")) == 1
        assert await listed(
            RunFilter(task_id=task.id, created_after=T0 + SECOND, created_before=T0 + 3 * SECOND)
        ) == [runs[2].id, runs[1].id]
        with pytest.raises(ValidationError):
            await uow.runs.list(RunFilter(), limit=2, cursor="e30")


async def test_runs_by_task_logical_time_and_worker_and_counts(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    upstream, downstream = make_task(), make_task()
    slot = T0 + timedelta(hours=1)
    first_try = make_run(upstream, scheduled_for=slot, status=RunStatus.FAILED)
    second_try = queued_run(upstream, scheduled_for=slot, attempt=2)
    other_slot = make_run(upstream, scheduled_for=slot + SECOND, status=RunStatus.SUCCEEDED)
    downstream_run = running_run(
        downstream, scheduled_for=slot, lease_expires_at=T0, worker_id="w-1"
    )
    elsewhere = running_run(downstream, lease_expires_at=T0, worker_id="w-2")
    await save(
        uow_factory,
        upstream,
        downstream,
        first_try,
        second_try,
        other_slot,
        downstream_run,
        elsewhere,
    )

    async with uow_factory() as uow:
        found = await uow.runs.for_logical_time([downstream.id, upstream.id], slot)
        assert ids(found) == ids(
            sorted([first_try, second_try, downstream_run], key=lambda r: (r.task_id, r.attempt))
        )
        assert await uow.runs.for_logical_time([], slot) == []
        assert ids(await uow.runs.active_for_task(upstream.id)) == [second_try.id]
        assert ids(await uow.runs.running_on_worker("w-1")) == [downstream_run.id]
        assert await uow.runs.running_on_worker("w-3") == []
        assert await uow.runs.count_by_status() == {
            RunStatus.FAILED: 1,
            RunStatus.QUEUED: 1,
            RunStatus.SUCCEEDED: 1,
            RunStatus.RUNNING: 2,
        }


async def test_pending_due_includes_unpublished_runs_and_elapsed_backoffs(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    now = T0 + timedelta(minutes=10)
    unpublished = make_run(task, created_at=T0 + SECOND)
    backoff_over = make_run(task, created_at=T0 + 2 * SECOND, not_before=T0)
    backoff_exact = make_run(task, created_at=T0 + 3 * SECOND, not_before=now)
    still_waiting = make_run(task, not_before=now + timedelta(microseconds=1))
    already_queued = queued_run(task)
    await save(
        uow_factory, task, unpublished, backoff_over, backoff_exact, still_waiting, already_queued
    )

    async with uow_factory() as uow:
        due = await uow.runs.pending_due(now, limit=10)
        assert ids(due) == [backoff_over.id, unpublished.id, backoff_exact.id]
        assert ids(await uow.runs.pending_due(now, limit=1)) == [backoff_over.id]


async def test_expired_leases_and_stale_queued_runs(uow_factory: SqlUnitOfWorkFactory) -> None:
    task = make_task()
    now = T0 + timedelta(minutes=10)
    expired_long_ago = running_run(task, lease_expires_at=now - timedelta(minutes=5))
    expired_now = running_run(task, lease_expires_at=now)
    alive = running_run(task, lease_expires_at=now + SECOND)
    stale = queued_run(task, queued_at=now - timedelta(minutes=5))
    fresh = queued_run(task, queued_at=now)
    await save(uow_factory, task, expired_long_ago, expired_now, alive, stale, fresh)

    async with uow_factory() as uow:
        assert ids(await uow.runs.expired_leases(now, limit=10)) == [
            expired_long_ago.id,
            expired_now.id,
        ]
        assert ids(await uow.runs.expired_leases(now, limit=1)) == [expired_long_ago.id]
        assert ids(await uow.runs.stale_queued(now, limit=10)) == [stale.id]
        assert await uow.runs.stale_queued(now - timedelta(hours=1), limit=10) == []


async def test_runs_fired_ahead_and_still_queued_past_their_slot(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    now = T0 + timedelta(minutes=10)
    slot = now - timedelta(seconds=10)
    held = queued_run(task, queued_at=slot - 2 * SECOND, not_before=slot)
    later = queued_run(task, queued_at=now - SECOND, not_before=now + SECOND)
    # Postponed by a gate, then queued after its not_before: not fired ahead.
    postponed = queued_run(task, queued_at=slot + SECOND, not_before=slot)
    republished = queued_run(task, queued_at=now, not_before=slot)
    await save(uow_factory, task, held, later, postponed, republished)

    async with uow_factory() as uow:
        assert ids(await uow.runs.held_past_due(now - 5 * SECOND, limit=10)) == [held.id]
        assert ids(await uow.runs.held_past_due(now + 2 * SECOND, limit=10)) == [
            held.id,
            later.id,
        ]
        assert await uow.runs.held_past_due(slot, limit=10) == []


async def test_queued_runs_are_counted_per_queue(uow_factory: SqlUnitOfWorkFactory) -> None:
    task = make_task()
    elsewhere = queued_run(task, queue=f"q-{new_id()[-8:]}")
    default = [queued_run(task, queue="cnt-default") for _ in range(2)]
    pending = make_run(task, queue="cnt-default")
    await save(uow_factory, task, elsewhere, *default, pending)
    async with uow_factory() as uow:
        counts = await uow.runs.count_queued(["cnt-default", elsewhere.queue, "cnt-empty"])
        assert counts == {"cnt-default": 2, elsewhere.queue: 1}
        assert await uow.runs.count_queued([]) == {}


async def test_pending_and_expired_queries_skip_rows_another_transaction_holds(
    engine: AsyncEngine, uow_factory: SqlUnitOfWorkFactory
) -> None:
    postgres_only(engine)
    task = make_task()
    now = T0 + timedelta(hours=1)
    pending = [make_run(task, created_at=T0 + i * SECOND) for i in range(3)]
    expired = [running_run(task, lease_expires_at=T0 + i * SECOND) for i in range(3)]
    await save(uow_factory, task, *pending, *expired)
    async with uow_factory() as relay, uow_factory() as other:
        assert ids(await relay.runs.pending_due(now, limit=2)) == ids(pending[:2])
        assert ids(await other.runs.pending_due(now, limit=10)) == ids(pending[2:])
        assert ids(await relay.runs.expired_leases(now, limit=1)) == ids(expired[:1])
        assert ids(await other.runs.expired_leases(now, limit=10)) == ids(expired[1:])


# -- batched forms of the hot path -------------------------------------------------------------


async def test_start_many_claims_logs_each_claim_and_reads_the_tasks_in_id_order(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    upstream = make_task()
    task = make_task(depends_on=(upstream.id,), params={"sleep_seconds": 0})
    queued = [queued_run(task) for _ in range(2)]
    other = queued_run(upstream)
    pending = make_run(task)
    await save(uow_factory, upstream, task, *queued, other, pending)
    now = T0 + timedelta(minutes=1)
    asked = [queued[1].id, pending.id, "missing", other.id, queued[0].id, queued[1].id]

    async with committed(uow_factory) as uow:
        started = await uow.runs.start_many(asked, worker_id="w-1", now=now, lease=LEASE)
        assert [run.id for run, _ in started] == sorted(ids([*queued, other]))
        assert await uow.runs.start_many(asked, worker_id="w-2", now=now, lease=LEASE) == []
        assert await uow.runs.start_many([], worker_id="w-2", now=now, lease=LEASE) == []
        stored_task = await uow.tasks.get(task.id)
        stored_upstream = await uow.tasks.get(upstream.id)

    by_task = {upstream.id: stored_upstream, task.id: stored_task}
    async with uow_factory() as uow:
        for run, read in started:
            assert read == by_task[run.task_id]
            assert run.status is RunStatus.RUNNING
            assert run.version == 2
            assert (run.worker_id, run.started_at, run.heartbeat_at) == ("w-1", now, now)
            assert run.lease_expires_at == now + LEASE
            assert await uow.runs.get(run.id) == run
            [event] = await uow.events.list_for_run(run.id)
            expected = run.claim_event()
            assert (event.run_id, event.task_id, event.from_status, event.to_status) == (
                expected.run_id,
                expected.task_id,
                expected.from_status,
                expected.to_status,
            )
            assert (event.at, event.actor, event.detail) == (
                expected.at,
                expected.actor,
                expected.detail,
            )
        assert await uow.events.list_for_run(pending.id) == []


async def test_start_many_of_one_run_claims_it_once_and_only_if_queued(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    """One run at a time is what a worker starts at light load (a statement of its own on
    PostgreSQL, ``id = ids[1]``)."""
    task = make_task()
    queued, pending = queued_run(task), make_run(task)
    await save(uow_factory, task, queued, pending)
    now = T0 + timedelta(minutes=1)
    async with committed(uow_factory) as uow:
        [(run, read)] = await uow.runs.start_many(
            [queued.id, queued.id], worker_id="w-1", now=now, lease=LEASE
        )
        assert await uow.runs.start_many([queued.id], worker_id="w-2", now=now, lease=LEASE) == []
        assert await uow.runs.start_many([pending.id], worker_id="w-2", now=now, lease=LEASE) == []
        assert await uow.runs.start_many(["missing"], worker_id="w-2", now=now, lease=LEASE) == []
    assert read == task
    assert (run.id, run.status, run.worker_id, run.version) == (
        queued.id,
        RunStatus.RUNNING,
        "w-1",
        2,
    )
    async with uow_factory() as uow:
        assert await uow.runs.get(queued.id) == run
        assert [event.to_status for event in await uow.events.list_for_run(queued.id)] == [
            RunStatus.RUNNING
        ]
        assert (await uow.runs.get(pending.id)).status is RunStatus.PENDING  # type: ignore[union-attr]


async def test_claim_many_claims_the_queued_runs_among_those_asked_in_id_order(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    queued = [queued_run(task) for _ in range(3)]
    pending = make_run(task)
    running = running_run(task, lease_expires_at=T0 + LEASE)
    await save(uow_factory, task, *queued, pending, running)
    now = T0 + timedelta(minutes=1)
    asked = [running.id, "missing", queued[2].id, pending.id, queued[0].id, queued[1].id]

    async with committed(uow_factory) as uow:
        claimed = await uow.runs.claim_many(
            [*asked, queued[0].id], worker_id="w-1", now=now, lease=LEASE
        )
        assert ids(claimed) == sorted(ids(queued))
        for run in claimed:
            assert run.status is RunStatus.RUNNING
            assert run.version == 2
            assert (run.worker_id, run.started_at, run.heartbeat_at) == ("w-1", now, now)
            assert run.lease_expires_at == now + LEASE
        assert await uow.runs.claim_many(asked, worker_id="w-2", now=now, lease=LEASE) == []
        assert await uow.runs.claim_many([], worker_id="w-2", now=now, lease=LEASE) == []

    async with uow_factory() as uow:
        assert await uow.runs.get_many([*asked, queued[0].id]) == sorted(
            [*claimed, pending, running], key=lambda run: run.id
        )
        assert await uow.runs.get_many([]) == []


async def test_update_many_writes_every_field_conditionally_on_the_version_read(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    first, second = make_run(task), make_run(task)
    await save(uow_factory, task, first, second)

    async with committed(uow_factory) as uow:
        runs = await uow.runs.get_many([first.id, second.id])
        writes = []
        for run in runs:
            writes.append((run, run.version))
            run.queue = "elsewhere"
            run.mark_queued(now=T0 + SECOND)
            run.claim(worker_id="w-1", now=T0 + 2 * SECOND, lease=LEASE)
            run.finish(
                RunStatus.FAILED,
                token=run.version,
                now=T0 + 3 * SECOND,
                result={"exit_code": 3, "tags": ["a", "b"]},
                error="exit code 3",
                output="out\n",
            )
        await uow.runs.update_many(writes)
        await uow.runs.update_many([])

    async with uow_factory() as uow:
        assert await uow.runs.get_many([first.id, second.id]) == runs
        stale = runs[0]
        with pytest.raises(Conflict):
            await uow.runs.update_many([(runs[1], runs[1].version), (stale, stale.version - 1)])
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.runs.update_many([(make_run(task), 1)])


async def test_update_many_stores_its_events_in_order_and_a_conflict_rolls_them_back(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    first = running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-1")
    second = running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-1")
    third = running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-1")
    await save(uow_factory, task, first, second, third)
    events = []
    writes = []
    for run in (first, second):
        writes.append((run, run.version))
        events.append(
            run.finish(RunStatus.SUCCEEDED, token=run.version, now=T0 + SECOND, result={"n": 1})
        )
    async with committed(uow_factory) as uow:
        await uow.runs.update_many(
            writes, fields=("status", "version", "finished_at"), events=events
        )
    async with uow_factory() as uow:
        for run, event in zip((first, second), events, strict=True):
            stored = await uow.runs.get(run.id)
            assert stored is not None
            assert stored.status is RunStatus.SUCCEEDED
            assert [e.id for e in await uow.events.list_for_run(run.id)] == [event.id]

    stale_version = third.version - 1
    lost = third.finish(RunStatus.SUCCEEDED, token=third.version, now=T0 + SECOND)
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.runs.update_many([(third, stale_version)], events=[lost])
    async with uow_factory() as uow:
        assert await uow.events.list_for_run(third.id) == []


async def test_update_each_writes_the_runs_at_their_version_each_with_its_events(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    """``update_each``: a run that moved on (a stale version) or is gone is left with its
    events, and fails none of the others; the ids written come back."""
    task = make_task()
    first, stale, second = (
        running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-1") for _ in range(3)
    )
    await save(uow_factory, task, first, stale, second)
    gone = running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-1")
    writes = []
    events = []
    for run in (first, stale, second, gone):
        writes.append((run, run.version - 1 if run is stale else run.version))
        events.append(
            run.finish(RunStatus.SUCCEEDED, token=run.version, now=T0 + SECOND, result={"n": 1})
        )
    async with committed(uow_factory) as uow:
        written = await uow.runs.update_each(
            writes, fields=("status", "version", "finished_at", "result"), events=events
        )
        assert await uow.runs.update_each([]) == set()
    assert written == {first.id, second.id}
    async with uow_factory() as uow:
        for run, event in zip((first, second), (events[0], events[2]), strict=True):
            stored = await uow.runs.get(run.id)
            assert stored is not None
            assert stored.status is RunStatus.SUCCEEDED
            assert stored.result == {"n": 1}
            assert [e.id for e in await uow.events.list_for_run(run.id)] == [event.id]
        left = await uow.runs.get(stale.id)
        assert left is not None
        assert left.status is RunStatus.RUNNING
        assert await uow.events.list_for_run(stale.id) == []
        assert await uow.runs.get(gone.id) is None
        assert await uow.events.list_for_run(gone.id) == []


async def test_json_columns_written_many_at_once_round_trip(
    uow_factory: SqlUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    """A run's result and its events' details, written by the statements that take many rows
    (their JSON as text), come back as they went: text beyond ASCII, nesting, every JSON type.
    A non-finite float, which JSON has no word for, is stored (never a refused write that
    would fail every outcome beside it): as null on PostgreSQL."""
    task = make_task()
    run = running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-1")
    await save(uow_factory, task, run)
    document = {
        "text": 'été ✓ \u2028 "quoted" \\ back',
        "nested": {"list": [1, 2.5, None, True, False, "x"], "empty": {}},
    }
    version = run.version
    event = run.finish(
        RunStatus.SUCCEEDED,
        token=run.version,
        now=T0 + SECOND,
        result={**document, "ratio": float("nan")},
    )
    event = dataclasses.replace(event, detail={**event.detail, **document})
    async with committed(uow_factory) as uow:
        await uow.runs.update_many([(run, version)], events=[event])
    async with uow_factory() as uow:
        stored = await uow.runs.get(run.id)
        (logged,) = await uow.events.list_for_run(run.id)
    assert stored is not None
    assert stored.result is not None
    ratio = stored.result.pop("ratio")
    assert stored.result == document
    if engine.dialect.name == "postgresql":
        assert ratio is None
    else:  # SQLite keeps the JSON text as written by its driver
        assert math.isnan(ratio)
    assert {k: logged.detail[k] for k in document} == document


async def test_update_many_with_fields_leaves_the_other_columns_as_stored(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    run = running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-1")
    await save(uow_factory, task, run)
    token = run.version

    async with committed(uow_factory) as uow:
        assert await uow.runs.renew_lease(
            run.id, worker_id="w-1", token=token, now=T0 + 10 * SECOND, lease=LEASE
        )
    # ``run`` is the copy from before the renewal; only the outcome's fields are written.
    run.finish(RunStatus.SUCCEEDED, token=token, now=T0 + 11 * SECOND, result={"ok": True})
    async with committed(uow_factory) as uow:
        await uow.runs.update_many(
            [(run, token)],
            fields=("status", "version", "finished_at", "lease_expires_at", "result", "error"),
        )
        with pytest.raises(ValueError, match="not writable"):
            await uow.runs.update_many([(run, run.version)], fields=("id",))

    async with uow_factory() as uow:
        stored = await uow.runs.get(run.id)
    assert stored is not None
    assert (stored.status, stored.version, stored.result) == (
        RunStatus.SUCCEEDED,
        token + 1,
        {"ok": True},
    )
    assert (stored.finished_at, stored.lease_expires_at) == (T0 + 11 * SECOND, None)
    assert stored.heartbeat_at == T0 + 10 * SECOND


async def test_renew_leases_renews_the_workers_running_runs_under_their_current_token(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    held = running_run(task, lease_expires_at=T0 + LEASE)
    other = running_run(task, lease_expires_at=T0 + LEASE)
    foreign = running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-2")
    done = make_run(task, status=RunStatus.SUCCEEDED)
    await save(uow_factory, task, held, other, foreign, done)
    later = T0 + 10 * SECOND

    async with committed(uow_factory) as uow:
        renewed = await uow.runs.renew_leases(
            [
                (held.id, held.version),
                (other.id, other.version + 1),
                (foreign.id, foreign.version),
                (done.id, done.version),
                ("missing", 1),
            ],
            worker_id="w-1",
            now=later,
            lease=LEASE,
        )
        assert renewed == {held.id}
        assert await uow.runs.renew_leases([], worker_id="w-1", now=later, lease=LEASE) == set()

    async with uow_factory() as uow:
        stored = {run.id: run for run in await uow.runs.get_many([held.id, other.id, foreign.id])}
    assert (stored[held.id].heartbeat_at, stored[held.id].lease_expires_at) == (
        later,
        later + LEASE,
    )
    assert stored[held.id].version == held.version
    assert stored[other.id].lease_expires_at == T0 + LEASE
    assert stored[foreign.id].lease_expires_at == T0 + LEASE
    assert stored[foreign.id].heartbeat_at == T0


async def test_append_output_adds_to_a_held_running_run_within_the_limit(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    held = running_run(task, lease_expires_at=T0 + LEASE)
    done = make_run(task, status=RunStatus.CANCELLED, worker_id="w-1", output="final")
    await save(uow_factory, task, held, done)

    async with uow_factory() as uow:
        append = uow.runs.append_output
        assert await append(held.id, "é one\n", worker_id="w-1", token=held.version, limit=10)
        assert await append(held.id, "two\n", worker_id="w-1", token=held.version, limit=10)
        assert not await append(held.id, "x", worker_id="w-1", token=held.version, limit=10)
        assert not await append(held.id, "x", worker_id="w-2", token=held.version, limit=99)
        assert not await append(held.id, "x", worker_id="w-1", token=held.version + 1, limit=99)
        assert not await append(done.id, "x", worker_id="w-1", token=done.version, limit=99)
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.runs.get(held.id)
        assert stored is not None
        assert (stored.output, stored.version) == ("é one\ntwo\n", held.version)
        finished = await uow.runs.get(done.id)
        assert finished is not None
        assert finished.output == "final"


async def test_still_held_names_the_workers_running_runs_under_their_token_and_writes_nothing(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    held = running_run(task, lease_expires_at=T0 + LEASE)
    other = running_run(task, lease_expires_at=T0 + LEASE)
    foreign = running_run(task, lease_expires_at=T0 + LEASE, worker_id="w-2")
    done = make_run(task, status=RunStatus.CANCELLED)
    await save(uow_factory, task, held, other, foreign, done)

    async with uow_factory() as uow:
        kept = await uow.runs.still_held(
            [
                (held.id, held.version),
                (other.id, other.version + 1),
                (foreign.id, foreign.version),
                (done.id, done.version),
                ("missing", 1),
            ],
            worker_id="w-1",
        )
        assert kept == {held.id}
        assert await uow.runs.still_held([], worker_id="w-1") == set()
    async with uow_factory() as uow:
        assert await uow.runs.get(held.id) == held


async def test_a_run_added_at_a_taken_logical_time_names_it_and_the_unit_survives(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    first = make_run(task, scheduled_for=T0)
    await save(uow_factory, task, first)
    async with committed(uow_factory) as uow:
        clash = make_run(task, scheduled_for=T0)
        with pytest.raises(AlreadyExists) as caught:
            await uow.runs.add(clash)
        assert caught.value.field == "scheduled_for"
        clash.scheduled_for += timedelta(microseconds=1)
        await uow.runs.add(clash)
    async with uow_factory() as uow:
        assert await uow.runs.get(clash.id) == clash


async def test_a_run_added_with_its_events_stores_both_or_neither(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    await save(uow_factory, task)
    run = make_run(task, scheduled_for=T0 + 5 * SECOND)
    created = run.created_event(actor="api")
    queued = run.mark_queued(now=T0 + 5 * SECOND)
    async with committed(uow_factory) as uow:
        await uow.runs.add(run, events=[created, queued])
    async with committed(uow_factory) as uow:
        clash = make_run(task, scheduled_for=run.scheduled_for)
        with pytest.raises(AlreadyExists) as caught:
            await uow.runs.add(clash, events=[clash.created_event(actor="api")])
        assert caught.value.field == "scheduled_for"
        clash.scheduled_for += timedelta(microseconds=1)
        await uow.runs.add(clash, events=[clash.created_event(actor="api")])

    async with uow_factory() as uow:
        assert await uow.runs.get(run.id) == run
        assert await uow.events.list_for_run(run.id) == [created, queued]
        assert [e.to_status for e in await uow.events.list_for_run(clash.id)] == [RunStatus.PENDING]


async def test_add_new_many_skips_taken_keys_and_writes_only_the_inserted_runs_events(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    taken = make_run(task, scheduled_for=T0 + SECOND, idempotency_key="schedule:1")
    await save(uow_factory, task, taken)
    fresh = [make_run(task, scheduled_for=T0 + (2 + i) * SECOND) for i in range(3)]
    clash = make_run(task, scheduled_for=T0 + SECOND, idempotency_key="schedule:1")
    events = [run.created_event(actor="scheduler") for run in [*fresh, clash]]
    events.append(fresh[1].mark_queued(now=T0 + 9 * SECOND))
    async with committed(uow_factory) as uow:
        inserted = await uow.runs.add_new_many([fresh[0], clash, *fresh[1:]], events=events)
        assert inserted == {run.id for run in fresh}
        assert await uow.runs.add_new_many([]) == set()

    async with uow_factory() as uow:
        for run in fresh:
            assert await uow.runs.get(run.id) == run
        assert await uow.runs.get(clash.id) is None
        assert await uow.events.list_for_run(clash.id) == []
        assert [e.to_status for e in await uow.events.list_for_run(fresh[1].id)] == [
            RunStatus.PENDING,
            RunStatus.QUEUED,
        ]


# -- events and decisions ----------------------------------------------------------------------


async def test_events_come_oldest_first_and_same_instant_in_insertion_order(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    run = make_run(task)
    await save(uow_factory, task, run)
    created = run.created_event(actor="api")
    queued = run.mark_queued(now=T0 + SECOND)
    claimed = run.claim(worker_id="w-1", now=T0 + 2 * SECOND, lease=LEASE)
    lost = run.lose(now=T0 + 3 * SECOND)
    dead = run.dead_letter(now=T0 + 3 * SECOND)
    async with committed(uow_factory) as uow:
        await uow.events.add_many([claimed, lost, dead])
        await uow.events.add(queued)
        await uow.events.add(created)
        await uow.events.add_many([])

    async with uow_factory() as uow:
        assert await uow.events.list_for_run(run.id) == [created, queued, claimed, lost, dead]
        assert await uow.events.list_for_run("missing") == []


async def test_decisions_come_newest_first_up_to_the_limit(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()
    await save(uow_factory, task)
    decisions = [
        SlotDecision(
            task_id=task.id,
            slot=T0 + i * SECOND,
            outcome=SlotOutcome.SKIPPED if i % 2 else SlotOutcome.FIRED,
            reason=SkipReason.MISFIRE if i % 2 else None,
            at=T0 + timedelta(minutes=i // 2),
            detail={"i": i},
        )
        for i in range(5)
    ]
    async with committed(uow_factory) as uow:
        await uow.decisions.add(decisions[0])
        await uow.decisions.add_many(decisions[1:])
        await uow.decisions.add_many([])

    async with uow_factory() as uow:
        newest = await uow.decisions.list_for_task(task.id, limit=3)
        assert newest == [decisions[4], decisions[3], decisions[2]]
        assert len(await uow.decisions.list_for_task(task.id, limit=100)) == 5


# -- workers and accounts ----------------------------------------------------------------------


async def test_workers_round_trip_update_and_list_by_status(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    def worker(name: str) -> Worker:
        return Worker(
            name=name,
            hostname="host-1",
            pid=4242,
            queues=("default", "gpu"),
            capacity=8,
            started_at=T0,
            heartbeat_at=T0,
            labels=frozenset({"gpu", "zone=a"}),
            software_version="1.2.3",
        )

    beta, alpha = worker("beta"), worker("alpha")
    async with committed(uow_factory) as uow:
        await uow.workers.add(beta)
        await uow.workers.add(alpha)
        with pytest.raises(AlreadyExists) as caught:
            await uow.workers.add(alpha)
        assert caught.value.field == "id"

    async with committed(uow_factory) as uow:
        assert await uow.workers.get(alpha.id) == alpha
        beta.drain()
        beta.record_heartbeat(now=T0 + SECOND, active_runs=3)
        await uow.workers.update(beta)
        with pytest.raises(NotFound):
            await uow.workers.update(worker("ghost"))

    async with uow_factory() as uow:
        assert await uow.workers.get(beta.id) == beta
        assert ids(await uow.workers.list()) == [alpha.id, beta.id]
        assert await uow.workers.list(status=WorkerStatus.DRAINING) == [beta]
        assert await uow.workers.list(status=WorkerStatus.OFFLINE) == []
        assert await uow.workers.get("missing") is None


async def test_usernames_are_unique_and_users_page_by_id(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    users = [make_user(username=f"user{i}") for i in range(5)]
    await save(uow_factory, *users)

    async with committed(uow_factory) as uow:
        with pytest.raises(AlreadyExists) as caught:
            await uow.users.add(make_user(username="user1"))
        assert caught.value.field == "username"
        assert await uow.users.count() == 5
        admin = users[0]
        admin.role = Role.ADMIN
        admin.disabled = True
        admin.updated_at = T0 + SECOND
        await uow.users.update(admin)
        with pytest.raises(NotFound):
            await uow.users.update(make_user())
        renamed = await uow.users.get(users[1].id)
        assert renamed is not None
        renamed.username = "user2"
        with pytest.raises(AlreadyExists):
            await uow.users.update(renamed)

    async with uow_factory() as uow:
        assert await uow.users.get(admin.id) == admin
        assert await uow.users.get_by_username("user3") == users[3]
        assert await uow.users.get_by_username("nobody") is None
        assert await uow.users.get("missing") is None
        first = await uow.users.list(limit=3)
        second = await uow.users.list(limit=3, cursor=first.next_cursor)
        assert second.next_cursor is None
        assert ids(first.items) + ids(second.items) == sorted(ids(users))


async def test_token_generation_is_bumped_atomically_and_never_written_back(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    user = make_user()
    await save(uow_factory, user)
    async with uow_factory() as uow:
        stale = await uow.users.get(user.id)
    assert stale is not None
    assert stale.token_generation == 0

    async with committed(uow_factory) as uow:
        assert await uow.users.bump_token_generation(user.id) == 1
        assert await uow.users.bump_token_generation(user.id) == 2
        with pytest.raises(NotFound):
            await uow.users.bump_token_generation("missing")
    async with committed(uow_factory) as uow:
        stale.disabled = True  # a copy read before the bumps, written back
        await uow.users.update(stale)

    async with uow_factory() as uow:
        stored = await uow.users.get(user.id)
    assert stored is not None
    assert stored.disabled
    assert stored.token_generation == 2


async def test_usernames_are_stored_lower_cased(uow_factory: SqlUnitOfWorkFactory) -> None:
    await save(uow_factory, make_user(username="Carol"))

    async with committed(uow_factory) as uow:
        with pytest.raises(AlreadyExists) as caught:
            await uow.users.add(make_user(username="CAROL"))
        assert caught.value.field == "username"
        found = await uow.users.get_by_username("carol")
    assert found is not None
    assert found.username == "carol"


async def test_api_keys_by_prefix_owner_and_revocation(uow_factory: SqlUnitOfWorkFactory) -> None:
    def key(prefix: str, owner: str) -> ApiKey:
        return ApiKey(
            name=f"key {prefix}",
            prefix=prefix,
            secret_hash="sha256$abc",
            owner_id=owner,
            role=Role.WORKER,
            created_at=T0,
            expires_at=T0 + timedelta(days=30),
        )

    mine, also_mine, theirs = key("sk_aaaa", "u1"), key("sk_bbbb", "u1"), key("sk_cccc", "u2")
    async with committed(uow_factory) as uow:
        for item in (mine, also_mine, theirs):
            await uow.api_keys.add(item)
        with pytest.raises(AlreadyExists) as caught:
            await uow.api_keys.add(key("sk_aaaa", "u3"))
        assert caught.value.field == "prefix"
        mine.revoke(T0 + SECOND)
        mine.last_used_at = T0 + SECOND
        await uow.api_keys.update(mine)
        with pytest.raises(NotFound):
            await uow.api_keys.update(key("sk_dddd", "u1"))

    async with uow_factory() as uow:
        assert await uow.api_keys.get_by_prefix("sk_aaaa") == mine
        assert await uow.api_keys.get(theirs.id) == theirs
        assert await uow.api_keys.get_by_prefix("sk_zzzz") is None
        assert ids(await uow.api_keys.list(owner_id="u1")) == sorted(ids([mine, also_mine]))
        assert ids(await uow.api_keys.list()) == sorted(ids([mine, also_mine, theirs]))


async def test_refresh_tokens_hash_is_unique_and_a_family_is_revoked_together(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    def token(family: str, token_hash: str, **extra: Any) -> RefreshToken:
        return RefreshToken(
            user_id="u1",
            family_id=family,
            token_hash=token_hash,
            created_at=T0,
            expires_at=T0 + timedelta(days=7),
            **extra,
        )

    spent = token("fam-1", "h1", used_at=T0 + SECOND)
    current = token("fam-1", "h2")
    revoked = token("fam-1", "h3", revoked_at=T0)
    bystander = token("fam-2", "h4")
    async with committed(uow_factory) as uow:
        for item in (spent, current, revoked, bystander):
            await uow.refresh_tokens.add(item)
        with pytest.raises(AlreadyExists) as caught:
            await uow.refresh_tokens.add(token("fam-3", "h1"))
        assert caught.value.field == "token_hash"
        current.used_at = T0 + 2 * SECOND
        await uow.refresh_tokens.update(current)
        with pytest.raises(NotFound):
            await uow.refresh_tokens.update(token("fam-9", "h9"))

    reuse = T0 + timedelta(minutes=1)
    async with committed(uow_factory) as uow:
        assert await uow.refresh_tokens.revoke_family("fam-1", now=reuse) == 2
        assert await uow.refresh_tokens.revoke_family("fam-1", now=reuse) == 0

    async with uow_factory() as uow:
        for item in (spent, current):
            stored = await uow.refresh_tokens.get_by_hash(item.token_hash)
            assert stored is not None
            assert stored.revoked_at == reuse
        assert await uow.refresh_tokens.get_by_hash("h3") == revoked
        assert await uow.refresh_tokens.get_by_hash("h4") == bystander
        assert await uow.refresh_tokens.get_by_hash("nope") is None


# -- lease store -------------------------------------------------------------------------------


async def test_lease_is_exclusive_until_it_expires_or_is_released(engine: AsyncEngine) -> None:
    leases = SqlLeaseStore(engine)
    ttl = timedelta(seconds=10)
    assert await leases.try_acquire("reaper", holder="a", ttl=ttl, now=T0)
    assert not await leases.try_acquire("reaper", holder="b", ttl=ttl, now=T0 + 5 * SECOND)
    assert await leases.try_acquire("reaper", holder="a", ttl=ttl, now=T0 + 5 * SECOND)  # renew
    assert not await leases.try_acquire("reaper", holder="b", ttl=ttl, now=T0 + 14 * SECOND)
    assert await leases.try_acquire("reaper", holder="b", ttl=ttl, now=T0 + 15 * SECOND)  # expired
    assert not await leases.try_acquire("reaper", holder="a", ttl=ttl, now=T0 + 16 * SECOND)
    assert await leases.try_acquire("relay", holder="a", ttl=ttl, now=T0 + 16 * SECOND)

    await leases.release("reaper", holder="a")  # not a's any more: no effect
    assert not await leases.try_acquire("reaper", holder="c", ttl=ttl, now=T0 + 17 * SECOND)
    await leases.release("reaper", holder="b")
    assert await leases.try_acquire("reaper", holder="c", ttl=ttl, now=T0 + 17 * SECOND)


# -- unit of work ------------------------------------------------------------------------------


async def test_unit_of_work_rolls_back_when_the_block_raises(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    task = make_task()

    async def add_then_fail() -> None:
        async with uow_factory() as uow:
            await uow.tasks.add(task)
            raise RuntimeError("half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        await add_then_fail()
    async with uow_factory() as uow:
        assert await uow.tasks.get(task.id) is None


async def test_unit_of_work_rolls_back_what_was_not_committed(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    kept, dropped, rolled_back = make_task(), make_task(), make_task()
    async with uow_factory() as uow:
        await uow.tasks.add(kept)
        await uow.commit()
        await uow.tasks.add(rolled_back)
        await uow.rollback()
        await uow.tasks.add(dropped)

    async with uow_factory() as uow:
        assert await uow.tasks.get(kept.id) == kept
        assert await uow.tasks.get(rolled_back.id) is None
        assert await uow.tasks.get(dropped.id) is None


async def test_unit_of_work_is_used_inside_its_block_only(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    uow = uow_factory()
    with pytest.raises(RuntimeError):
        await uow.tasks.get("x")
    async with uow:
        with pytest.raises(RuntimeError):
            await uow.__aenter__()
    async with uow:  # reusable after it closed
        assert await uow.tasks.get("x") is None


async def test_an_unreachable_database_is_unavailable() -> None:
    from scheduler_infrastructure.persistence.engine import create_engine

    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(Unavailable):
            async with SqlUnitOfWorkFactory(engine)() as uow:
                await uow.tasks.get("x")
        with pytest.raises(Unavailable):
            await SqlLeaseStore(engine).try_acquire("r", holder="h", ttl=SECOND, now=T0)
    finally:
        await engine.dispose()


# -- templates ---------------------------------------------------------------------------------


def make_template(**overrides: Any) -> Template:
    values: dict[str, Any] = {
        "name": f"template-{new_id()[-12:]}",
        "executor": "http",
        "params": {"url": "https://x.example/{{city}}"},
        "params_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        "schedule": parse_schedule({"cron": "*/5 * * * *", "timezone": "Europe/Oslo"}),
        "bounds": ScheduleBounds(min_interval=timedelta(minutes=5), allow_custom=False),
        "policies": {"queue": "vendor", "retry": {"max_attempts": 2}},
        "created_by": OWNER,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    return Template(**values)


async def test_templates_round_trip_page_update_by_version_and_delete(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    first, second, third = make_template(), make_template(), make_template(schedule=None)
    async with uow_factory() as uow:
        for template in (first, second, third):
            await uow.templates.add(template)
        with pytest.raises(AlreadyExists) as taken:
            await uow.templates.add(make_template(name=first.name))
        assert taken.value.field == "name"
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.templates.get(first.id) == first
        assert await uow.templates.get(first.id, for_update=True) == first
        assert await uow.templates.get_by_name(third.name) == third
        assert await uow.templates.get("missing") is None
        page = await uow.templates.list(limit=2)
        rest = await uow.templates.list(limit=2, cursor=page.next_cursor)
        assert ids(page.items) + ids(rest.items) == sorted(ids([first, second, third]))
        assert rest.next_cursor is None
        first.version, first.description = 2, "v2"
        await uow.templates.update(first, expected_version=1)
        with pytest.raises(Conflict):
            await uow.templates.update(first, expected_version=1)
        await uow.templates.delete(second.id)
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.templates.get(first.id)
        assert stored is not None
        assert (stored.version, stored.description) == (2, "v2")
        assert await uow.templates.get(second.id) is None


async def test_a_templates_subscriptions_are_found_and_filtered_by_template(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    mine = make_task(template_id="t-1", template_version=1, template_params={"a": 1})
    other = make_task(template_id="t-2", template_version=1, template_params={})
    plain = make_task()
    await save(uow_factory, mine, other, plain)
    async with uow_factory() as uow:
        assert ids(await uow.tasks.with_template("t-1")) == [mine.id]
        assert await uow.tasks.count(TaskFilter(template_id="t-2")) == 1
        listed = await uow.tasks.list(TaskFilter(template_id="t-1"), limit=10)
        assert ids(listed.items) == [mine.id]


async def test_update_many_writes_every_task_conditionally_with_its_upstreams_and_limits(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    upstream = make_task()
    many = [make_task(limits=("old",), depends_on=(upstream.id,)) for _ in range(3)]
    await save(uow_factory, upstream, *many)
    async with committed(uow_factory) as uow:
        writes = []
        for n, task in enumerate(many):
            task.priority = n
            task.params = {"sleep_seconds": n}
            task.limits = ("new", "other")
            task.depends_on = ()
            task.schedule = parse_schedule({"interval_seconds": 60 + n})
            task.template_params = {"n": n}
            writes.append((task, task.version))
            task.version += 1
        await uow.tasks.update_many(writes)
    async with uow_factory() as uow:
        for task in many:
            assert await uow.tasks.get(task.id) == task
        assert await uow.limits.referencing_tasks("old") == 0
        assert await uow.limits.referencing_tasks("new") == 3
        assert await uow.tasks.dependents(upstream.id) == []
    async with uow_factory() as uow:  # one stale version: Conflict naming the version
        stale = [(task, task.version) for task in many]
        stale[1] = (many[1], many[1].version - 1)
        with pytest.raises(Conflict) as caught:
            await uow.tasks.update_many(stale)
        assert caught.value.field == "version"
        await uow.tasks.update_many([])


async def test_record_many_appends_in_the_order_given(uow_factory: SqlUnitOfWorkFactory) -> None:
    records = [
        EventRecord(kind="task.updated", at=T0, actor="user:a", subject=f"task:{n}",
                    team_id="team", detail={"n": n})
        for n in range(5)
    ]  # fmt: skip
    async with committed(uow_factory) as uow:
        await uow.events.record_many(records)
        await uow.events.record_many([])
    async with uow_factory() as uow:
        logged = await uow.events.read_log(EventQuery(after=LOG_START), limit=10)
    assert [entry.detail["n"] for entry in logged] == [0, 1, 2, 3, 4]
