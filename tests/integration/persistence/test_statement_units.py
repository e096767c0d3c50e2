"""Statement units of work (``SqlUnitOfWorkFactory.statements``) on PostgreSQL: autocommit, so
a plain read and a standalone write (new runs with their events) are one round trip each and
durable as they return; every other statement — a row lock, another write, a savepoint — is
refused with ``NeedsTransaction`` before it is sent, on the driver path and on SQLAlchemy's
(under tracing) alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.conftest import wipe
from scheduler_application.errors import Conflict
from scheduler_application.execution.service import ExecutionService, Outcome, Settlement
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.ports.unit_of_work import NeedsTransaction
from scheduler_domain.accounts import Role, User
from scheduler_domain.executor_policy import ExecutorPolicy
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


@pytest.fixture(params=["driver", "sqlalchemy"])
async def engine(request: pytest.FixtureRequest, postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine nobody listens to (the driver path), or one whose statements are listened
    to (SQLAlchemy's path, as under tracing)."""
    engine = create_engine(postgres_url, pool_size=2)
    if request.param == "sqlalchemy":
        event.listen(engine.sync_engine, "before_cursor_execute", lambda *_: None)
    try:
        yield engine
    finally:
        await wipe(engine)  # the session's database is shared with the other tests
        await engine.dispose()


async def _task(factory: SqlUnitOfWorkFactory) -> Task:
    now = datetime.now(UTC)
    task = Task(owner_id="alice", name="t", executor="noop", created_at=now, updated_at=now)
    async with factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    return task


def _run(task: Task) -> TaskRun:
    now = datetime.now(UTC)
    return TaskRun.create(task, trigger=RunTrigger.MANUAL, logical_time=now, now=now)


async def _count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text(sql), params) or 0)


async def test_reads_and_standalone_writes_run_each_committed_as_it_returns(
    engine: AsyncEngine,
) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    task = await _task(factory)
    run = _run(task)
    async with factory.statements() as uow:
        assert [found.id for found in await uow.tasks.get_many([task.id])] == [task.id]
        assert await uow.runs.add_new_many([run], events=[run.created_event(actor="a")]) == {run.id}
        # Committed already: another connection sees the run and its event.
        runs = "SELECT count(*) FROM task_runs WHERE id = :r"
        events = "SELECT count(*) FROM run_events WHERE run_id = :r"
        assert await _count(engine, runs, r=run.id) == 1
        assert await _count(engine, events, r=run.id) == 1
        await uow.rollback()  # undoes nothing already written
    assert await _count(engine, runs, r=run.id) == 1


async def test_a_statement_that_needs_a_transaction_is_refused_before_it_is_sent(
    engine: AsyncEngine,
) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    task = await _task(factory)
    run = _run(task)
    async with factory.statements() as uow:
        with pytest.raises(NeedsTransaction):
            await uow.tasks.lock_many([task.id])  # SELECT … FOR UPDATE
        with pytest.raises(NeedsTransaction):
            await uow.events.add_many([run.created_event(actor="a")])  # a write of its own
        with pytest.raises(NeedsTransaction):
            await uow.runs.add(run)  # an insert that is not the standalone one
        with pytest.raises(NeedsTransaction):
            await uow.tasks.update(task, expected_version=task.version)  # a savepoint
    assert await _count(engine, "SELECT count(*) FROM task_runs") == 0
    assert await _count(engine, "SELECT count(*) FROM run_events") == 0


async def test_an_ordinary_unit_of_work_is_not_restricted(engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    task = await _task(factory)
    async with factory() as uow:
        assert await uow.tasks.lock_many([task.id]) == {task.id}
        await uow.commit()


class _Begins:
    """The ``BEGIN``s sent on ``engine`` while inside (SQLAlchemy begins its bookkeeping in
    autocommit too; only a connection that is not in autocommit sends one)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.count = 0

    def _on_begin(self, connection: Any) -> None:
        if not connection.connection.dbapi_connection.autocommit:
            self.count += 1

    def __enter__(self) -> _Begins:
        event.listen(self.engine.sync_engine, "begin", self._on_begin)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine.sync_engine, "begin", self._on_begin)


def _queued(tasks: list[Task]) -> list[TaskRun]:
    """A queued run of each task, a microsecond apart."""
    now = datetime.now(UTC)
    return [
        TaskRun(
            task_id=task.id,
            owner_id=task.owner_id,
            trigger=RunTrigger.MANUAL,
            scheduled_for=now + timedelta(microseconds=i),
            created_at=now,
            status=RunStatus.QUEUED,
            queued_at=now,
        )
        for i, task in enumerate(tasks)
    ]


async def test_a_worker_starts_runs_in_one_statement_that_reads_the_owners_roles(
    engine: AsyncEngine,
) -> None:
    """``claim_many`` with statement units: the claim, its events, the tasks and their
    owners' roles are one statement with no ``BEGIN`` and nothing read after it; a run the
    executor policy refuses (its owner was demoted since: no more shell) is failed and
    dead-lettered in a transaction of its own, the only one."""
    factory = SqlUnitOfWorkFactory(engine)
    now = datetime.now(UTC)
    owner = User(
        username="op", password_hash="x", role=Role.OPERATOR, created_at=now, updated_at=now
    )
    shell = Task(
        owner_id=owner.id,
        name="sh",
        executor="shell",
        params={"argv": ["true"]},
        created_at=now,
        updated_at=now,
    )
    noop = Task(owner_id=owner.id, name="nop", executor="noop", created_at=now, updated_at=now)
    queued = _queued([shell, noop, noop])
    async with factory() as uow:
        await uow.users.add(owner)
        await uow.tasks.add(shell)
        await uow.tasks.add(noop)
        for run in queued:
            await uow.runs.add(run)
        await uow.commit()
    demote = "UPDATE users SET role = 'user' WHERE id = :u"
    async with engine.begin() as connection:
        await connection.execute(text(demote), {"u": owner.id})
    execution = ExecutionService(
        uow_factory=factory,
        clock=SystemClock(),
        executor_policy=ExecutorPolicy(),
        statement_uow_factory=factory.statements,
    )
    with _Begins(engine) as begins:
        claimed = await execution.claim_many([run.id for run in queued], worker_id="w")
    assert set(claimed) == {run.id for run in queued[1:]}
    assert begins.count == 1  # the refusal's transaction; the start had none
    status = "SELECT status FROM task_runs WHERE id = :r"
    async with engine.connect() as connection:
        refused = await connection.scalar(text(status), {"r": queued[0].id})
    assert refused == RunStatus.DEAD_LETTERED.value
    running = "SELECT count(*) FROM task_runs WHERE status = 'running' AND worker_id = 'w'"
    assert await _count(engine, running) == 2


async def _claimed_outcomes(
    engine: AsyncEngine, task: Task, results: list[ExecutionResult]
) -> tuple[ExecutionService, list[Outcome]]:
    """A worker's view: runs of ``task`` queued and claimed (statement units), and one outcome
    per result, carrying the claimed copies as the worker's do."""
    factory = SqlUnitOfWorkFactory(engine)
    queued = _queued([task] * len(results))
    async with factory() as uow:
        for run in queued:
            await uow.runs.add(run)
        await uow.commit()
    execution = ExecutionService(
        uow_factory=factory,
        clock=SystemClock(),
        executor_policy=ExecutorPolicy(),
        statement_uow_factory=factory.statements,
    )
    claimed = await execution.claim_many([run.id for run in queued], worker_id="w")
    outcomes = [
        Outcome(
            run_id=run.id,
            token=claimed[run.id].token,
            result=result,
            run=claimed[run.id].run,
            task=claimed[run.id].task,
        )
        for run, result in zip(queued, results, strict=True)
    ]
    return execution, outcomes


async def _event_kinds(engine: AsyncEngine, run_id: str) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT to_status FROM run_events WHERE run_id = :r ORDER BY at, id"),
            {"r": run_id},
        )
        return [row[0] for row in rows]


async def test_outcomes_are_one_statement_and_a_run_that_moved_on_is_decided_alone(
    engine: AsyncEngine,
) -> None:
    """``complete_many`` with statement units: the outcomes and their events are one
    statement, with no ``BEGIN``. A run cancelled between its claim and its outcome is left by
    that statement — no ``succeeded`` status, no event of it — and decided again on its own,
    in a transaction (the only one): its answer is the ``Conflict`` a lone outcome gets, and
    the others' answers are their settlements."""
    factory = SqlUnitOfWorkFactory(engine)
    task = await _task(factory)
    ok = ExecutionResult(status="succeeded", result={"n": 1})
    execution, outcomes = await _claimed_outcomes(engine, task, [ok, ok, ok])
    with _Begins(engine) as begins:
        answers = await execution.complete_many(outcomes)
    assert begins.count == 0
    assert [type(answer) for answer in answers] == [Settlement] * 3
    for outcome in outcomes:
        assert await _event_kinds(engine, outcome.run_id) == ["running", "succeeded"]

    execution, outcomes = await _claimed_outcomes(engine, task, [ok, ok, ok])
    moved = outcomes[1].run_id
    async with factory() as uow:
        run = await uow.runs.get(moved)
        assert run is not None
        read = run.version
        await uow.events.add(run.cancel(now=datetime.now(UTC), actor="op", reason="stop"))
        await uow.runs.update(run, expected_version=read)
        await uow.commit()
    with _Begins(engine) as begins:
        answers = await execution.complete_many(outcomes)
    assert begins.count == 1  # the moved-on run's own try
    assert isinstance(answers[0], Settlement)
    assert isinstance(answers[2], Settlement)
    assert isinstance(answers[1], Conflict)
    statuses = "SELECT status FROM task_runs WHERE id = ANY(:ids) ORDER BY array_position(:ids, id)"
    async with engine.connect() as connection:
        rows = await connection.execute(text(statuses), {"ids": [o.run_id for o in outcomes]})
        assert [row[0] for row in rows] == ["succeeded", "cancelled", "succeeded"]
    assert await _event_kinds(engine, moved) == ["running", "cancelled"]
    assert await _event_kinds(engine, outcomes[0].run_id) == ["running", "succeeded"]


async def test_outcomes_with_a_retry_to_insert_go_the_transactional_way(
    engine: AsyncEngine,
) -> None:
    """A failed attempt with attempts left needs its retry inserted, which a statement unit
    refuses before anything is written: the whole batch is written in one transaction, the
    success beside it included, and the retry is there."""
    factory = SqlUnitOfWorkFactory(engine)
    now = datetime.now(UTC)
    task = Task(
        owner_id="alice",
        name="flaky",
        executor="noop",
        retry=RetryPolicy(max_attempts=3),
        created_at=now,
        updated_at=now,
    )
    async with factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    failed = ExecutionResult(status="failed", error="boom")
    execution, outcomes = await _claimed_outcomes(
        engine, task, [ExecutionResult(status="succeeded"), failed]
    )
    with _Begins(engine) as begins:
        answers = await execution.complete_many(outcomes)
    assert begins.count == 1
    assert isinstance(answers[0], Settlement)
    assert answers[0].retry is None
    assert isinstance(answers[1], Settlement)
    assert answers[1].retry is not None
    retry = answers[1].retry
    assert await _count(engine, "SELECT count(*) FROM task_runs WHERE id = :r", r=retry.id) == 1
    assert await _event_kinds(engine, outcomes[0].run_id) == ["running", "succeeded"]
    assert (await _event_kinds(engine, outcomes[1].run_id))[:2] == ["running", "failed"]
