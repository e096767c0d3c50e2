"""Postgres queue specifics: LISTEN/NOTIFY wake-ups, the polling fallback, the delivery limit,
and recovery after the server terminates the queue's connections."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from queue_helpers import (
    PREFIX,
    VISIBILITY_TIMEOUT,
    QueueMaker,
    admin_execute,
    assert_no_delivery,
    eventually,
    next_delivery,
    publish_eventually,
    run_message,
)
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.tasks.changes import TaskChangeSignal
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence import driver
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues import messages
from scheduler_infrastructure.queues import postgres_statements as statements
from scheduler_infrastructure.queues.postgres import PostgresRunQueue

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

#: So slow that a quick delivery can only come from a notification.
NO_POLLING = 60.0


async def _listening(queue: object) -> None:
    async def check() -> bool:
        return bool(queue.listening)  # type: ignore[attr-defined]

    await eventually(check, within=10)


async def _insert_without_notify(engine: AsyncEngine, queue: str, payload: bytes) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO queue_messages (queue, priority, payload) VALUES (:q, 0, :p)"),
            {"q": queue, "p": payload},
        )


async def test_notification_wakes_a_waiting_consumer(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue(poll_interval=NO_POLLING)
    name = new_queue_name()
    async with queue.consume([name], prefetch=1) as consumer:
        await _listening(queue)  # the first consumer opens the listener
        await assert_no_delivery(consumer, within=0.5)  # it claimed nothing and now waits
        message = run_message(name)
        await queue.publish(message)
        delivery = await next_delivery(consumer, within=5)
        assert delivery.message == message
        await queue.ack(delivery)


async def test_a_message_for_later_is_delivered_at_its_time_woken_by_its_notification(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """A run fired ahead of its slot: its message is claimable from ``not_before`` on, not
    before, and the notification of its insert (which names that instant) wakes the consumer
    then — with polling off, nothing else could."""
    queue = await make_queue(poll_interval=NO_POLLING)
    name = new_queue_name()
    async with queue.consume([name], prefetch=5) as consumer:
        await _listening(queue)  # the first consumer opens the listener
        await assert_no_delivery(consumer, within=0.3)
        deliver_at = datetime.now(UTC) + timedelta(seconds=1)
        later = run_message(name, number=1, not_before=deliver_at)
        await queue.publish(later)
        await assert_no_delivery(consumer, within=0.7)
        delivery = await next_delivery(consumer, within=5)
        received = datetime.now(UTC)
        assert delivery.message.run_id == later.run_id
        assert deliver_at <= received < deliver_at + timedelta(seconds=0.5), received
        await queue.ack(delivery)


async def test_polling_finds_a_message_whose_notification_was_lost(
    make_queue: QueueMaker, new_queue_name, queue_engine: AsyncEngine
) -> None:
    queue = await make_queue(poll_interval=0.3)
    name = new_queue_name()
    async with queue.consume([name], prefetch=1) as consumer:
        await assert_no_delivery(consumer, within=0.5)
        message = run_message(name)
        await _insert_without_notify(queue_engine, name, messages.encode(message))
        delivery = await next_delivery(consumer, within=5)
        assert delivery.message == message
        await queue.ack(delivery)


async def test_polling_delivers_when_notifications_are_off(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue(listen=False, poll_interval=0.3)
    name = new_queue_name()
    async with queue.consume([name], prefetch=1) as consumer:
        await assert_no_delivery(consumer, within=0.5)
        message = run_message(name)
        await queue.publish(message)
        delivery = await next_delivery(consumer, within=5)
        assert delivery.message == message
        await queue.ack(delivery)
    assert not queue.listening


async def test_message_delivered_too_often_is_dead_lettered(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue(max_deliveries=1)
    name = new_queue_name()
    message = run_message(name)
    await queue.publish(message)

    async with queue.consume([name], prefetch=1) as first:
        await next_delivery(first)  # and dies without acking
    async with queue.consume([name], prefetch=1) as second:
        await assert_no_delivery(second, within=VISIBILITY_TIMEOUT * 3)

    assert [dead.run_id for dead in await queue.dead_letters(name)] == [message.run_id]
    assert await queue.depth(name) == 0


async def test_unreadable_row_is_dead_lettered_not_delivered(
    make_queue: QueueMaker, new_queue_name, queue_engine: AsyncEngine
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    await _insert_without_notify(queue_engine, name, b"\x93not a run message")

    async with queue.consume([name], prefetch=1) as consumer:
        await assert_no_delivery(consumer, within=1.0)

    async with queue_engine.connect() as connection:
        reasons = (
            await connection.execute(
                text("SELECT reason FROM queue_dead_letters WHERE queue = :q"), {"q": name}
            )
        ).scalars()
        assert list(reasons) == ["unreadable"]


async def test_queue_recovers_after_its_connections_are_terminated(
    make_queue: QueueMaker, new_queue_name, queue_database_url: str
) -> None:
    queue = await make_queue(poll_interval=NO_POLLING)
    name = new_queue_name()
    database = queue_database_url.rsplit("/", 1)[1]
    listener_pids = "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
    async with queue.consume([name], prefetch=1) as consumer:
        await _listening(queue)  # the first consumer opens the listener
        [old_listener] = await admin_execute(listener_pids, database, f"{queue.channel}-listener")
        await queue.publish(run_message(name, number=1))
        await queue.ack(await next_delivery(consumer))

        terminated = await admin_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        assert len(terminated) >= 2  # the listener and the pooled connections

        async def listening_again() -> bool:
            rows = await admin_execute(listener_pids, database, f"{queue.channel}-listener")
            return bool(rows) and rows[0]["pid"] != old_listener["pid"] and queue.listening

        await eventually(listening_again, within=20)
        message = run_message(name, number=2)
        await publish_eventually(queue, message)
        # Polling is off: only a notification through the new listener can deliver it quickly.
        delivery = await next_delivery(consumer, within=10)
        assert delivery.message == message
        await queue.ack(delivery)
    await asyncio.sleep(0)
    assert await queue.depth(name) == 0


async def test_a_message_published_within_a_transaction_exists_exactly_when_it_commits(
    make_queue: QueueMaker, new_queue_name, queue_engine: AsyncEngine
) -> None:
    """The atomic outbox: a rolled-back transaction leaves no message; a committed one is
    delivered (woken by its NOTIFY, which goes out at the commit)."""
    queue = await make_queue(poll_interval=NO_POLLING)
    name = new_queue_name()
    uow_factory = SqlUnitOfWorkFactory(queue_engine)
    async with queue.consume([name], prefetch=2) as consumer:
        await _listening(queue)  # the first consumer opens the listener
        await assert_no_delivery(consumer, within=0.3)
        discarded, kept = run_message(name, number=1), run_message(name, number=2)
        async with uow_factory() as uow:
            assert await queue.publish_within(uow, [discarded]) is True
            await uow.rollback()
        async with uow_factory() as uow:
            assert await queue.publish_within(uow, [kept]) is True
            assert await queue.depth(name) == 0  # not visible before the commit
            await assert_no_delivery(consumer, within=0.3)
            await uow.commit()
        delivery = await next_delivery(consumer, within=5)
        assert delivery.message == kept
        await queue.ack(delivery)
        await assert_no_delivery(consumer, within=0.5)


async def test_publish_within_sees_through_the_task_change_signals_unit_of_work(
    make_queue: QueueMaker, new_queue_name, queue_engine: AsyncEngine
) -> None:
    """``scheduler run`` with an API and a dispatcher wraps the API's units of work to wake the
    dispatcher on commit: the messages of a trigger still go in its transaction (a rolled-back
    one leaves none; none is visible before the commit), not in a second one after it."""
    queue = await make_queue(poll_interval=NO_POLLING)
    name = new_queue_name()
    signal = TaskChangeSignal()
    uow_factory = signal.watch(SqlUnitOfWorkFactory(queue_engine))
    async with uow_factory() as uow:
        assert await queue.publish_within(uow, [run_message(name, number=1)]) is True
        await uow.rollback()
    assert await queue.depth(name) == 0
    async with uow_factory() as uow:
        assert await queue.publish_within(uow, [run_message(name, number=2)]) is True
        assert await queue.depth(name) == 0
        await uow.commit()
    assert await queue.depth(name) == 1
    assert signal.notified == 1


async def test_publish_within_declines_a_unit_of_work_on_another_database(
    make_queue: QueueMaker, new_queue_name, tmp_path
) -> None:
    queue = await make_queue()
    other = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    try:
        async with SqlUnitOfWorkFactory(other)() as uow:
            assert await queue.publish_within(uow, [run_message(new_queue_name())]) is False
    finally:
        await other.dispose()


async def test_a_wake_claims_from_every_queue_in_one_statement(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """A consumer of several queues (its task queues and its worker's direct queue) claims
    from all of them in one statement: a new message costs one claim, not one per queue."""
    queue = await make_queue(poll_interval=NO_POLLING)
    names = [new_queue_name() for _ in range(4)]
    claimed: list[list[str]] = []
    claim = queue._claim

    async def counting_claim(consumer, queues, limit):  # type: ignore[no-untyped-def]
        claimed.append(list(queues))
        return await claim(consumer, queues, limit)

    queue._claim = counting_claim  # type: ignore[method-assign]
    async with queue.consume(names, prefetch=4) as consumer:
        await _listening(queue)  # the first consumer opens the listener
        await assert_no_delivery(consumer, within=0.3)
        for target in (names[3], names[1], names[2], names[0]):
            await assert_no_delivery(consumer, within=0.3)  # the last fetch has finished
            claimed.clear()
            await queue.publish(run_message(target))
            delivery = await next_delivery(consumer, within=5)
            assert delivery.message.queue == target
            assert claimed == [names]
            await queue.ack(delivery)


async def test_one_claim_takes_the_most_urgent_then_the_oldest_across_queues(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue(poll_interval=NO_POLLING)
    first, second = new_queue_name(), new_queue_name()
    old = run_message(second, priority=0)
    urgent = run_message(first, priority=5)
    newer = run_message(first, priority=0)
    for message in (old, urgent, newer):
        await queue.publish(message)
    async with queue.consume([first, second], prefetch=3) as consumer:
        got = [await next_delivery(consumer, within=5) for _ in range(3)]
        assert [d.message for d in got] == [urgent, old, newer]
        for delivery in got:
            await queue.ack(delivery)


async def test_only_a_process_that_consumes_listens(
    make_queue: QueueMaker, new_queue_name, queue_database_url: str
) -> None:
    """Every notification goes to every listening connection: a process that only publishes
    (the API, the dispatcher) must not listen, or each message wakes it for nothing."""
    queue = await make_queue(poll_interval=NO_POLLING)
    database = queue_database_url.rsplit("/", 1)[1]
    listeners = "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
    name = new_queue_name()
    await queue.publish(run_message(name))
    await asyncio.sleep(0.3)
    assert await admin_execute(listeners, database, f"{queue.channel}-listener") == []
    assert not queue.listening
    async with queue.consume([name], prefetch=1) as consumer:
        await _listening(queue)
        assert len(await admin_execute(listeners, database, f"{queue.channel}-listener")) == 1
        await queue.ack(await next_delivery(consumer, within=5))


async def _consumers_engine_after_a_delivery(make_queue: QueueMaker, name: str) -> AsyncEngine:
    """The engine a queue's consumers used for a claim and an ack of one message on ``name``."""
    queue = await make_queue(poll_interval=NO_POLLING)
    async with queue.consume([name], prefetch=1) as consumer:
        await queue.publish(run_message(name))
        await queue.ack(await next_delivery(consumer, within=5))
    engine = queue._consumer_engine
    assert engine is not None  # the claim and the ack above ran on it
    return engine


async def test_the_consumers_claim_on_connections_that_plan_it_once(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """PostgreSQL planned the claim afresh on every execution (its estimate for ``LIMIT $n``
    priced the generic plan far above a custom one), which was most of a claim's cost and
    was paid by every consumer a notification woke. The consumers' statements run on
    connections that keep one generic plan per statement."""
    name = new_queue_name()
    engine = await _consumers_engine_after_a_delivery(make_queue, name)
    async with engine.connect() as connection:
        assert await connection.scalar(text("SHOW plan_cache_mode")) == "force_generic_plan"
        for _ in range(7):
            await driver.fetch(
                connection,
                statements.CLAIM,
                {
                    "consumer": "probe",
                    "visibility": 30.0,
                    "queues": [name],
                    "limit": 5,
                    "acks": [],
                },
            )
        prepared = (
            await connection.execute(
                text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
            )
        ).all()
    [(generic, custom)] = [  # the claim, prepared once on this connection
        (generic, custom)
        for sql, generic, custom in prepared
        if "delivery_count = delivery_count + 1" in sql
    ]
    assert custom == 0
    assert generic >= 7


async def test_the_consumers_plans_read_by_index_even_when_the_queue_looks_empty(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """A plan is kept until the table is analysed again: one made on an empty queue must not
    scan the whole table once a backlog builds up."""
    name = new_queue_name()
    engine = await _consumers_engine_after_a_delivery(make_queue, name)
    literals = {
        "consumer": "'probe'",
        "visibility": "30",
        "queues": f"ARRAY['{name}']",
        "limit": "5",
        "ids": "ARRAY[1]",
        "acks": "ARRAY[2]",
    }
    async with engine.connect() as connection:
        # An empty table never analysed: the planner's view of a queue that was just emptied.
        await connection.exec_driver_sql(
            "CREATE TEMPORARY TABLE q (LIKE queue_messages INCLUDING ALL)"
        )
        for number, statement in enumerate((statements.CLAIM, statements.ACK, statements.EXTEND)):
            compiled = statement.compiled(engine.dialect)
            sql = compiled.sql.replace("queue_messages", "q")
            await connection.exec_driver_sql(f"PREPARE probe{number} AS {sql}")
            values = ", ".join(literals[parameter] for parameter in compiled.names)
            plan = "\n".join(
                row[0]
                for row in await connection.exec_driver_sql(
                    f"EXPLAIN EXECUTE probe{number}({values})"
                )
            )
            assert "Seq Scan" not in plan, plan
            assert "Index Scan" in plan, plan


class _Statements:
    """An engine whose statements are listened to (the consumers then use it too), and what
    it ran: (SQL, parameters)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_size=2)
        self.seen: list[tuple[str, Any]] = []
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        self.seen.append((statement, parameters))

    def lone_acks(self) -> list[Any]:
        return [p for sql, p in self.seen if sql.lstrip().startswith("DELETE FROM queue_messages")]

    def claims(self) -> list[Any]:
        return [p for sql, p in self.seen if "delivery_count = delivery_count + 1" in sql]


async def test_while_its_statements_are_traced_the_consumers_use_the_queues_engine(
    queue_database_url: str, new_queue_name
) -> None:
    """Tracing listens to the engine's statements; the consumers' own connections would leave
    the claims and acks out of the traces, so a listened engine keeps them."""
    recorded = _Statements(queue_database_url)
    queue = PostgresRunQueue(recorded.engine, prefix=PREFIX, poll_interval=NO_POLLING)
    name = new_queue_name()
    try:
        async with queue:
            async with queue.consume([name], prefetch=1) as consumer:
                await _listening(queue)
                await queue.publish(run_message(name))
                delivery = await next_delivery(consumer, within=5)
                await queue.ack(delivery)
            assert queue._consumer_engine is None
        claims = recorded.claims()
        assert claims
        # The ack's delete: carried by a claim, or a statement of its own.
        assert any(delivery.tag.id in _listed(p) for p in [*claims, *recorded.lone_acks()])
    finally:
        await recorded.engine.dispose()


async def test_an_ack_is_carried_by_the_next_claim_and_returns_once_its_row_is_gone(
    queue_database_url: str, new_queue_name
) -> None:
    """An ack waits a few milliseconds for a claim to carry it: the claim's statement deletes
    the acked row (no statement of its own), and the ack returns once it has. A claim that
    fails deleted nothing: its acks then go on their own."""
    recorded = _Statements(queue_database_url)
    queue = PostgresRunQueue(recorded.engine, prefix=PREFIX, poll_interval=NO_POLLING)
    name = new_queue_name()
    held = "SELECT count(*) FROM queue_messages WHERE id = :m"
    try:
        # prefetch 2, one message: the consumer's own claim was not filled, so it waits for a
        # notification and claims nothing meanwhile.
        async with queue, queue.consume([name], prefetch=2) as consumer:
            await _listening(queue)
            await queue.publish(run_message(name))
            delivery = await next_delivery(consumer, within=5)
            claims_before = len(recorded.claims())
            ack = asyncio.create_task(queue.ack(delivery))
            await asyncio.sleep(0)  # the ack is waiting
            assert not ack.done()
            assert await queue._claim(consumer, [name], 1) == []
            await asyncio.wait_for(ack, 5)
            assert await _count(recorded.engine, held, m=delivery.tag.id) == 0
            [carrier] = recorded.claims()[claims_before:]
            assert delivery.tag.id in _listed(carrier)
            assert recorded.lone_acks() == []

            await queue.publish(run_message(name))
            second = await next_delivery(consumer, within=5)
            ack = asyncio.create_task(queue.ack(second))
            await asyncio.sleep(0)
            with pytest.raises(DBAPIError):  # a claim the server refuses
                await queue._claim(consumer, [name], "not a number")  # type: ignore[arg-type]
            await asyncio.wait_for(ack, 5)
            assert await _count(recorded.engine, held, m=second.tag.id) == 0
            [lone] = recorded.lone_acks()
            assert _listed(lone) == [second.tag.id]
    finally:
        await recorded.engine.dispose()


async def test_an_ack_no_claim_carries_deletes_its_row_on_its_own(
    queue_database_url: str, new_queue_name
) -> None:
    recorded = _Statements(queue_database_url)
    queue = PostgresRunQueue(recorded.engine, prefix=PREFIX, poll_interval=NO_POLLING)
    name = new_queue_name()
    try:
        # prefetch 3, two messages: no claim was filled, none comes until a notification.
        async with queue, queue.consume([name], prefetch=3) as consumer:
            await _listening(queue)
            await queue.publish(run_message(name))
            await queue.publish(run_message(name))
            deliveries = [await next_delivery(consumer, within=5) for _ in range(2)]
            claims_before = len(recorded.claims())
            await asyncio.gather(*(queue.ack(d) for d in deliveries))
            left = "SELECT count(*) FROM queue_messages WHERE queue = :q"
            assert await _count(recorded.engine, left, q=name) == 0
            assert len(recorded.claims()) == claims_before
            [lone] = recorded.lone_acks()  # both in one statement
            assert sorted(_listed(lone)) == sorted(d.tag.id for d in deliveries)
    finally:
        await recorded.engine.dispose()


def _listed(parameters: Any) -> list[Any]:
    """The values in the lists among a statement's parameters (positional or named)."""
    values = parameters.values() if isinstance(parameters, dict) else parameters or ()
    return [item for value in values if isinstance(value, list | tuple) for item in value]


async def _stored_task(uow_factory: SqlUnitOfWorkFactory) -> Task:
    now = datetime.now(UTC)
    task = Task(
        owner_id="alice",
        name=f"t-{uuid.uuid4().hex[:8]}",
        executor="noop",
        created_at=now,
        updated_at=now,
    )
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    return task


def _new_run(task: Task) -> TaskRun:
    now = datetime.now(UTC)
    return TaskRun.create(task, trigger=RunTrigger.MANUAL, logical_time=now, now=now)


async def _count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text(sql), params) or 0)


async def test_runs_inserted_with_their_messages_exist_exactly_when_they_commit(
    make_queue: QueueMaker, new_queue_name, queue_engine: AsyncEngine
) -> None:
    """``insert_runs_within``: the runs, their events and the messages of the runs inserted in
    one statement of the transaction — nothing of it before the commit, or after a rollback; a
    run that was not inserted (its id taken) gets no message and no second event; the
    commit's NOTIFY wakes the consumer (polling is off)."""
    queue = await make_queue(poll_interval=NO_POLLING)
    name = new_queue_name()
    uow_factory = SqlUnitOfWorkFactory(queue_engine)
    task = await _stored_task(uow_factory)
    first, second = _new_run(task), _new_run(task)

    async def runs_of_task() -> int:
        return await _count(
            queue_engine, "SELECT count(*) FROM task_runs WHERE task_id = :t", t=task.id
        )

    async def events_of(run: TaskRun) -> int:
        return await _count(
            queue_engine, "SELECT count(*) FROM run_events WHERE run_id = :r", r=run.id
        )

    async with queue.consume([name], prefetch=5) as consumer:
        await _listening(queue)  # the first consumer opens the listener
        await assert_no_delivery(consumer, within=0.3)
        message_of = {
            run.id: run_message(name, run_id=run.id, task_id=task.id) for run in (first, second)
        }
        async with uow_factory() as uow:
            inserted = await queue.insert_runs_within(
                uow, [first], [first.created_event(actor="user:alice")], [message_of[first.id]]
            )
            assert inserted == {first.id}
            await uow.rollback()
        assert (await runs_of_task(), await queue.depth(name)) == (0, 0)
        await assert_no_delivery(consumer, within=0.3)

        async with uow_factory() as uow:
            assert await queue.insert_runs_within(
                uow, [first], [first.created_event(actor="user:alice")], [message_of[first.id]]
            ) == {first.id}
            await uow.commit()
        delivery = await next_delivery(consumer, within=5)
        assert delivery.message == message_of[first.id]
        await queue.ack(delivery)

        async with uow_factory() as uow:
            # ``first`` again (its id is taken: not inserted) and a new one.
            inserted = await queue.insert_runs_within(
                uow,
                [first, second],
                [first.created_event(actor="user:alice"), second.created_event(actor="user:alice")],
                [message_of[first.id], message_of[second.id]],
            )
            assert inserted == {second.id}
            assert await queue.depth(name) == 0  # not visible before the commit
            await assert_no_delivery(consumer, within=0.3)
            await uow.commit()
        delivery = await next_delivery(consumer, within=5)
        assert delivery.message == message_of[second.id]
        await queue.ack(delivery)
        await assert_no_delivery(consumer, within=0.5)  # nothing for the run not inserted
    assert await runs_of_task() == 2
    assert (await events_of(first), await events_of(second)) == (1, 1)


async def test_insert_runs_within_declines_a_unit_of_work_on_another_database(
    make_queue: QueueMaker, new_queue_name, tmp_path
) -> None:
    queue = await make_queue()
    other = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    try:
        async with SqlUnitOfWorkFactory(other)() as uow:
            message = run_message(new_queue_name())
            assert await queue.insert_runs_within(uow, [], [], [message]) is None
    finally:
        await other.dispose()


# -- one process woken per notification -------------------------------------------------------


async def _pickable_by(queues: list[PostgresRunQueue], name: str, expected: set[str]) -> None:
    """Wait until every queue's last beat names ``expected`` as the processes for ``name``."""

    async def check() -> bool:
        return all(set(queue._pickable.get(name, ())) == expected for queue in queues)

    await eventually(check, within=10)


async def _two_processes(make_queue: QueueMaker) -> list[PostgresRunQueue]:
    """Two queues as two processes would hold them; no poll and no sweep in a test's time,
    so that only notifications make them claim."""
    return [await make_queue(poll_interval=NO_POLLING, sweep_after=NO_POLLING) for _ in "ab"]


def _counting_claims(queue: PostgresRunQueue) -> list[int]:
    """The claims ``queue`` sends from now on, as the number of rows each returned."""
    counted: list[int] = []
    claim = queue._claim

    async def counting(consumer, queues, limit):  # type: ignore[no-untyped-def]
        rows = await claim(consumer, queues, limit)
        counted.append(len(rows))
        return rows

    queue._claim = counting  # type: ignore[method-assign]
    return counted


async def test_a_notification_makes_one_listening_process_claim_not_every_one(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """Two processes consume one queue. Each message's notification reaches both, and exactly
    one claims it (the one its token picks); both get work. With no sweep in the test's
    time, any claim beyond one per message would be the herd."""
    name = new_queue_name()
    first, second = await _two_processes(make_queue)
    async with (
        first.consume([name], prefetch=4) as one,
        second.consume([name], prefetch=4) as other,
    ):
        await _pickable_by([first, second], name, {first.consumer_name, second.consumer_name})
        await assert_no_delivery(one, within=0.2)  # the first claims have come back empty
        claims = [_counting_claims(first), _counting_claims(second)]
        consumers = (one, other)
        waiting = [asyncio.create_task(anext(consumer)) for consumer in consumers]
        got = [0, 0]
        try:
            for number in range(24):
                message = run_message(name, number=number)
                await first.publish(message)
                done, _ = await asyncio.wait(
                    waiting, timeout=5, return_when=asyncio.FIRST_COMPLETED
                )
                assert done, "no delivery within 5 s"
                [finished] = done
                taker = waiting.index(finished)
                waiting[taker] = asyncio.create_task(anext(consumers[taker]))
                delivery = finished.result()
                assert delivery.message == message
                got[taker] += 1
                await (first, second)[taker].ack(delivery)
                assert [len(claims[0]), len(claims[1])] == got, (claims, got)
        finally:
            for task in waiting:
                task.cancel()
        assert all(got), got  # 2**-23 that one token would pick the same process every time


async def test_a_message_whose_picked_process_is_gone_is_claimed_after_the_sweep_delay(
    make_queue: QueueMaker, new_queue_name, queue_engine: AsyncEngine
) -> None:
    """A process that died still beats in the table until its beat lapses; messages whose
    token picks it are claimed by the live one within ``sweep_after`` — polling is off."""
    name = new_queue_name()
    queue = await make_queue(poll_interval=NO_POLLING)
    async with queue_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO queue_listeners (name, queues, beat_at)"
                " VALUES (:name, :queues, now() + interval '10 minutes')"
            ),
            {"name": f"gone-{name}", "queues": f'["{name}"]'},
        )
    try:
        async with queue.consume([name], prefetch=4) as consumer:
            await _pickable_by([queue], name, {queue.consumer_name, f"gone-{name}"})
            await assert_no_delivery(consumer, within=0.2)
            sweeps: list[str] = []
            sweep = queue._sweep

            def counting_sweep(swept: str) -> None:
                sweeps.append(swept)
                sweep(swept)

            queue._sweep = counting_sweep  # type: ignore[method-assign]
            for number in range(16):
                message = run_message(name, number=number)
                await queue.publish(message)
                delivery = await next_delivery(consumer, within=5)
                assert delivery.message == message
                await queue.ack(delivery)
            assert sweeps, "2**-16 that no token picked the gone process"
    finally:
        async with queue_engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM queue_listeners WHERE name = :name"), {"name": f"gone-{name}"}
            )


async def test_a_process_without_free_capacity_is_not_picked(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """A process whose consumer is full says so in its beat: the others stop picking it, and
    its messages go at once to one that can take them."""
    name = new_queue_name()
    busy, idle = await _two_processes(make_queue)
    async with (
        busy.consume([name], prefetch=1) as full,
        idle.consume([name], prefetch=4) as other,
    ):
        await _pickable_by([busy, idle], name, {busy.consumer_name, idle.consumer_name})
        await busy.publish(run_message(name, number=0))
        # Whoever took it: make the busy process hold a message and the idle one hold none.
        first = await next_delivery_of([full, other])
        if first.tag.consumer is other:
            await idle.ack(first)
            await busy.publish(run_message(name, number=1))
            # Sweeps are off and only one process is picked: retry until the busy one is.
            held = await _held_by(full, busy, other, idle, name)
        else:
            held = first
        await _pickable_by([busy, idle], name, {idle.consumer_name})
        for number in range(2, 10):
            message = run_message(name, number=number)
            await busy.publish(message)
            delivery = await next_delivery(other, within=5)
            assert delivery.message == message
            await idle.ack(delivery)
        # Left out while full, it claims on every notification once it has room again, until
        # its next beat names it (else it would take work only by sweeps meanwhile).
        busy._pickable = {name: [idle.consumer_name]}
        assert not any(busy._picked(name, token) for token in range(4))
        await busy.ack(held)
        assert all(busy._picked(name, token) for token in range(4))


async def next_delivery_of(consumers: list[Any], within: float = 5.0) -> Any:
    waiting = [asyncio.create_task(anext(consumer)) for consumer in consumers]
    try:
        done, _ = await asyncio.wait(waiting, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            if not task.done():
                task.cancel()
    assert done, f"no delivery within {within} s"
    return done.pop().result()


async def _held_by(
    full: Any, busy: PostgresRunQueue, other: Any, idle: PostgresRunQueue, name: str
) -> Any:
    """Publish until a message lands on ``full`` (each lands on one of the two)."""
    for number in range(100, 164):
        delivery = await next_delivery_of([full, other])
        if delivery.tag.consumer is full:
            return delivery
        await idle.ack(delivery)
        await busy.publish(run_message(name, number=number))
    pytest.fail("64 tokens in a row picked the same process")


async def test_a_sweep_is_skipped_when_a_claim_since_found_the_queue_drained(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """A process not picked claims ``sweep_after`` later — unless one of its claims sent
    since the notification came back short, which proves the message was taken."""
    name = new_queue_name()
    queue = await make_queue(poll_interval=NO_POLLING, sweep_after=0.2)
    async with queue.consume([name], prefetch=2) as consumer:
        await _listening(queue)
        await assert_no_delivery(consumer, within=0.3)  # its claims have come back empty
        claims = _counting_claims(queue)

        queue._sweep_later(name)  # nothing claims meanwhile: the sweep does
        await eventually(lambda: _true(claims == [0]), within=5, interval=0.02)
        await assert_no_delivery(consumer, within=0.4)
        assert claims == [0]

        queue._sweep_later(name)
        consumer.wake()  # a claim sent after the notification finds nothing
        await eventually(lambda: _true(claims == [0, 0]), within=5, interval=0.02)
        await assert_no_delivery(consumer, within=0.4)  # twice the sweep's delay
        assert claims == [0, 0]
        assert name not in queue._sweeps


async def _true(value: bool) -> bool:
    return value


async def test_a_process_that_stops_consuming_removes_its_beat(
    make_queue: QueueMaker, new_queue_name, queue_engine: AsyncEngine
) -> None:
    name = new_queue_name()
    queue = await make_queue(poll_interval=NO_POLLING)
    beats = "SELECT count(*) FROM queue_listeners WHERE name = :name"
    async with queue.consume([name], prefetch=1):
        await _pickable_by([queue], name, {queue.consumer_name})
        assert await _count(queue_engine, beats, name=queue.consumer_name) == 1
    await queue.aclose()
    assert await _count(queue_engine, beats, name=queue.consumer_name) == 0


class _RefusingConnection:
    def __init__(self, *, closed: bool) -> None:
        self.closed = closed

    async def fetch(self, *_: Any, **__: Any) -> list[Any]:
        raise RuntimeError('relation "queue_listeners" does not exist')

    def is_closed(self) -> bool:
        return self.closed


async def test_without_beats_every_process_claims_on_every_notification(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """A beat that fails (migrations behind: no table) leaves no process to pick: each claims
    on every notification, as before beats. A beat on a lost connection ends it (the listener
    connects again)."""
    name = new_queue_name()
    queue = await make_queue(poll_interval=NO_POLLING)
    queue._pickable = {name: ["somebody-else"]}
    assert not queue._picked(name, 7)
    await queue._beat(_RefusingConnection(closed=False))
    assert queue._pickable == {}
    assert queue._picked(name, 7)
    with pytest.raises(RuntimeError):
        await queue._beat(_RefusingConnection(closed=True))


async def test_the_consumers_keep_their_connections_between_statements(
    make_queue: QueueMaker, new_queue_name
) -> None:
    """Claims and acks take a kept connection of the consumers' engine instead of a pool round
    each (``kept_connections``), and closing the queue gives them back."""
    queue = await make_queue(poll_interval=NO_POLLING)
    name = new_queue_name()
    async with queue.consume([name], prefetch=1) as consumer:
        for number in range(3):
            await queue.publish(run_message(name, number=number))
            await queue.ack(await next_delivery(consumer, within=5))
    shelf = queue._consumer_shelf
    assert shelf is not None
    assert shelf.reused >= 2
    kept = [connection for connection, _ in shelf._free]
    assert kept
    assert all(not connection.closed for connection in kept)
    await queue.aclose()
    assert all(connection.closed for connection in kept)
    assert queue._consumer_shelf is None
