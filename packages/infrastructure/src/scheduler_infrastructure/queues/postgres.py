"""A queue in a Postgres table, for deployments that want no broker.

Publishing inserts rows and sends ``NOTIFY`` in the same statement (so a notification never
announces a row that is not committed). A consumer claims the next rows in delivery order with
``FOR UPDATE SKIP LOCKED``, setting a lock that lapses after ``visibility_timeout``; while the
consumer lives it extends the locks of its unacked deliveries, so only a consumer that died (or
was closed with deliveries still unacked) sees them delivered again, once the lock lapses. An
ack deletes the row — in the statement of the process's next claim when one comes within
``ACK_LINGER``, else in one of its own; a requeue clears the lock. A consumer claims from all
of its queues in one statement (most urgent first, then oldest). Consumers wait on ``LISTEN``
on one dedicated connection per process, opened with the process's first consumer (a process
that only publishes — the API, the dispatcher — does not listen, so a notification wakes only
the processes that consume), and also poll every ``poll_interval``, so a lost notification
only delays delivery.

A notification reaches every listening process, but only one of them claims at once: each
process beats every second on its listening connection (``queue_listeners``: its name and
the queues it has free capacity for) and reads the others' beats, and the notification
carries a random token by which all pick the same process among the live ones that have
capacity for its queue. The others claim :data:`SWEEP_AFTER` later, unless a claim of theirs
sent since found their queues drained: so a message whose process died, filled up or has not
beaten yet still goes within that delay, and a process that is never picked still takes work.
Without this every process claimed on every notification and all but one found nothing (two
claims per notification with two worker processes; see ``docs/benchmarks.md``).
A message may be claimable only from a later instant (``not_before``: a run fired ahead of its
slot); its notification names that instant and the consumers wake then.

Rows claimed more than ``max_deliveries`` times, unreadable rows and rejected deliveries
(``nack(requeue=False)``) move to ``queue_dead_letters``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.errors import Unavailable
from scheduler_application.ports.queue import Delivery, RunMessage
from scheduler_application.ports.unit_of_work import UnitOfWork, innermost
from scheduler_domain.events import RunEvent
from scheduler_domain.run import TaskRun
from scheduler_infrastructure.errors import ConfigError
from scheduler_infrastructure.persistence import driver
from scheduler_infrastructure.persistence.driver_errors import is_unavailable, translated
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.kept_connections import ConnectionShelf
from scheduler_infrastructure.persistence.repositories.runs import AlongsideInsert
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWork
from scheduler_infrastructure.queues import messages
from scheduler_infrastructure.queues import postgres_statements as statements
from scheduler_infrastructure.queues.consumer import BufferedConsumer
from scheduler_infrastructure.queues.postgres_consumer import PostgresConsumer, PostgresTag
from scheduler_infrastructure.queues.postgres_listener import (
    NotificationListener,
    connect_arguments,
)
from scheduler_infrastructure.queues.priorities import clamp

log = logging.getLogger("scheduler.queues.postgres")

#: After a message's ``available_at``, when its consumers are woken (seconds), and woken again.
WAKE_MARGIN = 0.002
WAKE_AGAIN = 0.1

#: The settings of the consumers' own connections (claims, acks, releases, extensions,
#: burials): each of those statements planned once per connection, and by index.
#: With custom plans PostgreSQL planned the claim again on every execution — its estimate for
#: ``LIMIT $n`` is a tenth of the queue, which prices the generic plan far above a custom one
#: — and that planning (0.25-0.3 ms) was most of a claim's cost, paid by every consumer a
#: notification woke. One plan serves whatever the values: the claim walks the queue's index
#: and locks at most ``limit`` rows, the others find their rows by primary key. Only a plan
#: made while the table looked nearly empty would be wrong (a sequential scan, kept until the
#: next analysis while the queue grows): these statements have an index for every read, so
#: sequential scans are off on these connections.
CONSUMER_SERVER_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}
#: Connections of the consumers' engine: a claim loop and a lock keeper per consumer, and the
#: acks that go on their own; more wait their turn.
CONSUMER_POOL_SIZE = 2
#: Connections of the consumers' engine kept between statements (of its four).
CONSUMER_KEPT = 2
#: How often a listening process beats (seconds), and after how long without a beat it is gone.
BEAT_SECONDS = 1.0
LISTENER_EXPIRY = 3.5
#: How long after a notification that picked another process this one claims all the same
#: (seconds), unless a claim of its own sent since found its queues drained.
SWEEP_AFTER = 0.1
#: How long an ack waits for a claim to carry it (seconds) before its row is deleted by a
#: statement of its own. At a steady flow a consumer of this process claims again within a few
#: milliseconds, and that claim deletes the acked rows in its own statement: one round trip
#: fewer per run. An ack still returns once its row is gone.
ACK_LINGER = 0.005


class PostgresRunQueue:
    """The Postgres adapter of ``RunQueue``; ``async with`` starts the listener, exit stops it.

    ``engine`` must be a ``postgresql+asyncpg`` engine; the queue tables come from migration
    0002. The engine is borrowed, not disposed.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        prefix: str = "scheduler",
        visibility_timeout: float = 30.0,
        poll_interval: float = 1.0,
        max_deliveries: int = 5,
        listen: bool = True,
        listen_dsn: str | None = None,
        consumer_name: str | None = None,
        sweep_after: float = SWEEP_AFTER,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ConfigError("queue.backend", "the postgres queue needs a PostgreSQL database")
        if visibility_timeout <= 0 or poll_interval <= 0 or max_deliveries < 1:
            raise ValueError("visibility_timeout, poll_interval and max_deliveries must be > 0")
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        #: The consumers' statements run on connections of their own (see
        #: :data:`CONSUMER_SERVER_SETTINGS`), opened with the first consumer.
        self._consumer_engine: AsyncEngine | None = None
        #: The consumers' engine's connections kept between its statements (no pool round
        #: per claim or ack: ``kept_connections``).
        self._consumer_shelf: ConnectionShelf | None = None
        self.channel = f"{prefix}_queue"
        self.visibility_timeout = visibility_timeout
        self.poll_interval = poll_interval
        self.max_deliveries = max_deliveries
        self.sweep_after = sweep_after
        self.consumer_name = consumer_name or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._listener = (
            NotificationListener(
                arguments=connect_arguments(
                    engine.url, dsn=listen_dsn, application_name=f"{self.channel}-listener"
                ),
                channel=self.channel,
                on_notify=self._wake,
                on_connect=self._wake_all,
                beat=self._beat,
                beat_seconds=BEAT_SECONDS,
            )
            if listen
            else None
        )
        self._consumers: dict[str, set[PostgresConsumer]] = {}
        #: Wake-ups scheduled for messages claimable later: (queue, epoch) -> timer handles.
        self._timers: dict[tuple[str, float], list[asyncio.TimerHandle]] = {}
        #: Queue -> the names of the live listening processes with capacity for it, sorted
        #: (from the last beat); a notification for a queue missing here wakes every process.
        self._pickable: dict[str, list[str]] = {}
        #: Queue -> (the sweep scheduled for it, when its last notification for another came).
        self._sweeps: dict[str, tuple[asyncio.TimerHandle, float]] = {}
        self._beat_failed = False
        self._serial = itertools.count(1)
        self._acks = _WaitingAcks(self._delete)
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._started = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for handles in self._timers.values():
            for handle in handles:
                handle.cancel()
        self._timers.clear()
        for handle, _ in self._sweeps.values():
            handle.cancel()
        self._sweeps.clear()
        consumers = {consumer for group in self._consumers.values() for consumer in group}
        await asyncio.gather(*(consumer.aclose() for consumer in consumers))
        if self._listener is not None:
            listened = self._listener.started
            await self._listener.aclose()  # first: no beat may write the row again after
            if listened:
                await self._leave()
        await self._acks.aclose()
        if self._consumer_shelf is not None:
            await self._consumer_shelf.aclose()
            self._consumer_shelf = None
        if self._consumer_engine is not None:
            await self._consumer_engine.dispose()
            self._consumer_engine = None
        self._started = False

    @property
    def listening(self) -> bool:
        """Whether notifications can reach the consumers right now (else they poll)."""
        return self._listener is not None and self._listener.listening

    # -- RunQueue --------------------------------------------------------------------------------

    async def publish(self, message: RunMessage) -> None:
        await self.publish_many((message,))

    async def publish_many(self, messages_: Sequence[RunMessage]) -> None:
        if not messages_:
            return
        await self._execute(statements.PUBLISH, self._publish_params(messages_))

    async def publish_within(self, uow: UnitOfWork, messages_: Sequence[RunMessage]) -> bool:
        """``TransactionalRunQueue``: insert the messages in the unit of work's transaction (its
        ``NOTIFY`` goes out at its commit), if it is a SQL unit of work on this database (or
        wraps one: the task-change signal's unit of work in ``scheduler run``)."""
        sql = self._sql_unit_here(uow)
        if sql is None:
            return False
        if messages_:
            async with translated("queue message"):
                await driver.fetch(
                    sql.connection, statements.PUBLISH, self._publish_params(messages_)
                )
        return True

    async def insert_runs_within(
        self,
        uow: UnitOfWork,
        runs: Sequence[TaskRun],
        events: Sequence[RunEvent],
        messages_: Sequence[RunMessage],
    ) -> set[str] | None:
        """``RunInsertingQueue``: insert ``runs`` and ``events`` as the unit of work's
        ``runs.add_new_many`` does, with the messages of the runs inserted, in its one
        statement (their ``NOTIFY`` goes out at the commit); the ids inserted. None, writing
        nothing, when the unit of work is not a SQL one on this database."""
        sql = self._sql_unit_here(uow)
        if sql is None:
            return None
        params = {
            f"message_{name}": values for name, values in self._publish_params(messages_).items()
        }
        params["message_run_ids"] = [message.run_id for message in messages_]
        alongside = AlongsideInsert(
            ctes=statements.WITH_RUNS_CTES, column=statements.WITH_RUNS_NOTIFY, params=params
        )
        return await sql.runs.add_new_many(runs, events=events, alongside=alongside)

    def _sql_unit_here(self, uow: UnitOfWork) -> SqlUnitOfWork | None:
        """The SQL unit of work ``uow`` is (or wraps: ``innermost``) if it is on this queue's
        database, else None."""
        inner = innermost(uow)
        if isinstance(inner, SqlUnitOfWork) and inner.engine.pool is self._engine.pool:
            return inner
        return None

    def _publish_params(self, messages_: Sequence[RunMessage]) -> dict[str, Any]:
        return {
            "queues": [message.queue for message in messages_],
            "priorities": [clamp(message.priority) for message in messages_],
            "payloads": [messages.encode(message) for message in messages_],
            "available": [message.not_before for message in messages_],
            "channel": self.channel,
        }

    def consume(self, queues: Sequence[str], *, prefetch: int) -> PostgresConsumer:
        if not self._started:
            raise RuntimeError("use `async with PostgresRunQueue(...)` before consuming")
        if self._listener is not None and not self._listener.started:
            # Only a process that consumes listens: every notification is sent to every
            # listening connection, and the API's or the dispatcher's would only be woken
            # for nothing (a herd of listeners per message).
            self._listener.start()
        consumer = PostgresConsumer(
            self,
            queues=queues,
            prefetch=prefetch,
            name=f"{self.consumer_name}/{next(self._serial)}",
        )
        for queue in consumer.queues:
            self._consumers.setdefault(queue, set()).add(consumer)
        consumer.start(on_close=self._forget)
        return consumer

    async def ack(self, delivery: Delivery) -> None:
        tag = _tag(delivery)
        tag.consumer.settle(tag)
        await self._acks.ack(tag.id)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        tag = _tag(delivery)
        tag.consumer.settle(tag)
        if requeue:
            await self._release(tag.consumer.name, [tag.id])
        else:
            await self._bury([tag.id], "rejected")

    async def depth(self, queue: str) -> int:
        rows = await self._execute(statements.DEPTH, {"queue": queue})
        return int(rows[0][0])

    async def delete_if_empty(self, queue: str) -> bool:
        """Nothing to delete: a queue is its rows. True when it has none left."""
        rows = await self._execute(statements.HOLDS_ANYTHING, {"queue": queue})
        return not rows[0][0]

    # -- beyond the port -------------------------------------------------------------------------

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[RunMessage]:
        """Dead-lettered messages of ``queue``, oldest first (unreadable ones left out)."""
        rows = await self._execute(statements.DEAD_LETTERS, {"queue": queue, "limit": limit})
        found = []
        for (payload,) in rows:
            with contextlib.suppress(messages.UnreadableMessage):
                found.append(messages.decode(payload))
        return found

    # -- statements ------------------------------------------------------------------------------

    def _consumers_engine(self) -> AsyncEngine:
        """The consumers' own engine (see :data:`CONSUMER_SERVER_SETTINGS`) — or the queue's,
        while somebody listens to its statements (tracing, ``echo``), so that traces keep
        every statement, as on the driver path."""
        if driver.statements_observed(self._engine):
            return self._engine
        if self._consumer_engine is None:
            self._consumer_engine = create_engine(
                self._engine.url,
                pool_size=CONSUMER_POOL_SIZE,
                server_settings=CONSUMER_SERVER_SETTINGS,
            ).execution_options(isolation_level="AUTOCOMMIT")
            self._consumer_shelf = ConnectionShelf(self._consumer_engine, keep=CONSUMER_KEPT)
        return self._consumer_engine

    async def _consumers_execute(
        self, statement: driver.Prebuilt, params: dict[str, Any]
    ) -> list[Any]:
        """:meth:`_execute` on the consumers' engine: their claims, acks, releases, lock
        extensions and burials."""
        engine = self._consumers_engine()
        shelf = self._consumer_shelf if engine is self._consumer_engine else None
        return await self._execute(statement, params, engine=engine, shelf=shelf)

    async def _execute(
        self,
        statement: driver.Prebuilt,
        params: dict[str, Any],
        *,
        engine: AsyncEngine | None = None,
        shelf: ConnectionShelf | None = None,
    ) -> list[Any]:
        """One autocommit statement (on ``engine``, else the queue's; on a connection of
        ``shelf``, the engine's kept ones, if given), retried once on a connection the server
        dropped (the pool then holds fresh connections); other connection trouble becomes
        :class:`Unavailable`."""
        for attempt in (1, 2):
            try:
                lent = shelf.lend() if shelf is not None else (engine or self._engine).connect()
                async with lent as connection:
                    return list(await driver.fetch(connection, statement, params))
            except Exception as error:
                if not is_unavailable(error):
                    raise
                if attempt == 1 and getattr(error, "connection_invalidated", False):
                    continue
                raise Unavailable(
                    f"the queue database is unavailable: {error}", dependency="broker"
                ) from error
        raise AssertionError("unreachable")

    async def _claim(
        self, consumer: PostgresConsumer, queues: Sequence[str], limit: int
    ) -> list[Any]:
        """Up to ``limit`` rows of any of ``queues``, in one statement, which also deletes
        the rows of the acks waiting. Should it fail, it deleted nothing: those acks go on
        their own."""
        acks = self._acks.take()
        try:
            rows = await self._consumers_execute(
                statements.CLAIM,
                {
                    "consumer": consumer.name,
                    "visibility": self.visibility_timeout,
                    "queues": list(queues),
                    "limit": limit,
                    "acks": list(acks),
                },
            )
        except BaseException:
            self._acks.put_back(acks)
            raise
        self._acks.done(acks)
        rows.sort(key=lambda row: (-row["priority"], row["id"]))
        return rows

    async def _delete(self, ids: list[int]) -> None:
        await self._consumers_execute(statements.ACK, {"ids": ids})

    async def _release(self, consumer: str, ids: list[int]) -> None:
        await self._consumers_execute(
            statements.RELEASE, {"ids": ids, "consumer": consumer, "channel": self.channel}
        )

    async def _extend(self, consumer: str, ids: list[int]) -> None:
        await self._consumers_execute(
            statements.EXTEND,
            {"ids": ids, "consumer": consumer, "visibility": self.visibility_timeout},
        )

    async def _bury(self, ids: list[int], reason: str) -> None:
        await self._consumers_execute(statements.BURY, {"ids": ids, "reason": reason})

    # -- notifications ---------------------------------------------------------------------------

    def _forget(self, consumer: BufferedConsumer) -> None:
        for queue in consumer.queues:
            self._consumers.get(queue, set()).discard(cast(PostgresConsumer, consumer))

    def _wake(self, payload: str) -> None:
        """A notification: ``<queue> ~<token>`` (messages to claim now, by the process the
        token picks), ``<queue>`` (to claim now, by every process) or ``<queue> <epoch>`` (one
        claimable from then on: its consumers are woken at that instant)."""
        queue, _, rest = payload.partition(" ")
        if rest.startswith("~") and rest[1:].isdigit():
            if not self._picked(queue, int(rest[1:])):
                self._sweep_later(queue)
                return
            rest = ""
        try:
            epoch = float(rest) if rest else None
        except ValueError:
            epoch = None  # not ours to read: wake the queue's consumers now, the safe side
        if epoch is not None:
            self._wake_at(queue, epoch)
            return
        for consumer in self._consumers.get(queue, ()):
            consumer.wake(queue)

    def _picked(self, queue: str, token: int) -> bool:
        """Whether the token picks this process for ``queue``: every listening process, from
        the same beats, picks the same one; when no beat names one, every process is picked.
        A process its last beat left out (it was full) that has capacity again claims too
        until its next beat says so: otherwise it would take work only by sweeps meanwhile."""
        names = self._pickable.get(queue)
        if not names:
            return True
        if self.consumer_name not in names:
            return any(consumer.free > 0 for consumer in self._consumers.get(queue, ()))
        return names[token % len(names)] == self.consumer_name

    def _sweep_later(self, queue: str) -> None:
        """Another process was picked for a message of ``queue``: claim ``sweep_after``
        (:data:`SWEEP_AFTER`) from now, unless a claim sent meanwhile finds the queue drained
        (see :meth:`_sweep`)."""
        if not self._consumers.get(queue):
            return
        now = time.monotonic()
        scheduled = self._sweeps.get(queue)
        if scheduled is not None:
            self._sweeps[queue] = (scheduled[0], now)
            return
        handle = asyncio.get_running_loop().call_later(self.sweep_after, self._sweep, queue)
        self._sweeps[queue] = (handle, now)

    def _sweep(self, queue: str) -> None:
        """Wake the consumers of ``queue`` that sent no claim since its last notification
        which came back short (one that did proves every message announced was taken)."""
        _, noticed = self._sweeps.pop(queue)
        for consumer in self._consumers.get(queue, ()):
            if consumer.unfilled_at < noticed:
                consumer.wake(queue)

    async def _beat(self, connection: Any) -> None:
        """Write this process's beat, and learn from the others' which process each queue's
        notifications pick (see :data:`statements.BEAT`). Should it fail (the table missing:
        migrations behind), every process claims on every notification, as before."""
        queues = sorted(
            {
                queue
                for group in self._consumers.values()
                for consumer in group
                if consumer.free > 0
                for queue in consumer.queues
            }
        )
        try:
            rows = await connection.fetch(
                statements.BEAT,
                self.consumer_name,
                json.dumps(queues),
                LISTENER_EXPIRY,
                timeout=10,
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if connection.is_closed():
                raise
            if not self._beat_failed:
                log.warning("queue listener cannot beat (%s); every process claims", error)
            self._beat_failed = True
            self._pickable = {}
            return
        self._beat_failed = False
        self._pickable = _pickable(rows, own=self.consumer_name, own_queues=queues)

    async def _leave(self) -> None:
        """Remove this process's beat, so that the others stop picking it at once (best
        effort: else its beat lapses within :data:`LISTENER_EXPIRY`)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._execute(statements.LEAVE, {"name": self.consumer_name}), timeout=2
            )

    def _wake_at(self, queue: str, epoch: float) -> None:
        """Wake ``queue``'s consumers at ``epoch`` (once per queue and instant however many
        notifications name it), and again :data:`WAKE_AGAIN` later, in case this host's clock
        runs a little ahead of the database's, which decides when the row is claimable."""
        delay = epoch - time.time()
        if delay <= 0:
            self._wake(queue)
            return
        key = (queue, epoch)
        if key in self._timers:
            return
        loop = asyncio.get_running_loop()
        handles = [
            loop.call_later(delay + extra, self._timer_fired, key, last)
            for extra, last in ((WAKE_MARGIN, False), (WAKE_AGAIN, True))
        ]
        self._timers[key] = handles

    def _timer_fired(self, key: tuple[str, float], last: bool) -> None:
        if last:
            self._timers.pop(key, None)
        self._wake(key[0])

    def _wake_all(self) -> None:
        for group in self._consumers.values():
            for consumer in group:
                consumer.wake()


def _pickable(rows: Sequence[Any], *, own: str, own_queues: list[str]) -> dict[str, list[str]]:
    """Queue -> the sorted names of the processes with capacity for it, from the beats read
    (``name``, ``queues`` as a JSON array) with this process's own as just written."""
    queues_of = {row["name"]: _queue_names(row["queues"]) for row in rows}
    queues_of[own] = own_queues
    pickable: dict[str, list[str]] = {}
    for name in sorted(queues_of):
        for queue in queues_of[name]:
            pickable.setdefault(queue, []).append(name)
    return pickable


def _queue_names(text: str) -> list[str]:
    """A beat's JSON array of queue names; anything else names none."""
    try:
        found = json.loads(text)
    except ValueError:
        return []
    if not isinstance(found, list):
        return []
    return [name for name in found if isinstance(name, str)]


class _WaitingAcks:
    """Acks waiting for a claim to delete their rows, or for :data:`ACK_LINGER` to pass, after
    which ``delete`` deletes them in a statement of their own. Each ack returns once its row is
    deleted, or raises what the deletion raised."""

    def __init__(self, delete: Callable[[list[int]], Awaitable[None]]) -> None:
        self._delete = delete
        #: Message id -> the future its ack awaits.
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._alone: set[asyncio.Task[None]] = set()

    async def ack(self, message_id: int) -> None:
        """Wait until the row is deleted. A caller cancelled meanwhile leaves the row to be
        deleted all the same."""
        loop = asyncio.get_running_loop()
        done = self._waiting.get(message_id)
        if done is None or done.done():
            done = self._waiting[message_id] = loop.create_future()
        self._arm(loop)
        await done

    def take(self) -> dict[int, asyncio.Future[None]]:
        """The acks waiting, for a claim to carry (:meth:`done` or :meth:`put_back` after)."""
        taken, self._waiting = self._waiting, {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return taken

    def done(self, taken: dict[int, asyncio.Future[None]]) -> None:
        for future in taken.values():
            if not future.done():
                future.set_result(None)

    def put_back(self, taken: dict[int, asyncio.Future[None]]) -> None:
        if taken:
            self._waiting = {**taken, **self._waiting}
            self._arm(asyncio.get_running_loop())

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiting:
            self._timer = loop.call_later(ACK_LINGER, self._go_alone)

    def _go_alone(self) -> None:
        self._timer = None
        taken = self.take()
        if taken:
            task = asyncio.create_task(self._delete_alone(taken))
            self._alone.add(task)
            task.add_done_callback(self._alone.discard)

    async def _delete_alone(self, taken: dict[int, asyncio.Future[None]]) -> None:
        try:
            await self._delete(list(taken))
        except Exception as error:
            for future in taken.values():
                if not future.done():
                    future.set_exception(error)
            return
        self.done(taken)

    async def aclose(self) -> None:
        """Delete the rows of the acks still waiting, and wait for those under way."""
        taken = self.take()
        if taken:
            await self._delete_alone(taken)
        if self._alone:
            await asyncio.gather(*self._alone, return_exceptions=True)


def _tag(delivery: Delivery) -> PostgresTag:
    if not isinstance(delivery.tag, PostgresTag):
        raise TypeError("not a delivery of the postgres queue")
    return delivery.tag
