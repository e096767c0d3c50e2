"""The transactional outbox: runs are created ``pending`` in the database, then published.

``relay_pending`` marks due pending runs ``queued`` and commits *before* publishing, so a message
never names a run the database does not know. A crash (or a broker outage) between that commit
and the publish leaves runs ``queued`` with no message; ``republish_stale_queued`` finds runs
queued longer than a claim should take and publishes them again. Duplicates are harmless: only
one claim of a run succeeds, the others are acked and dropped.

On the way out every run passes three gates, in this order:

1. ``max_concurrent``: a task with that many runs queued or running keeps the rest pending (a
   ``buffer_one`` task counts as ``max_concurrent`` 1: its buffered run waits here). The
   task's row is locked (skipping rows another transaction holds) while its runs are counted, so
   several dispatchers cannot each publish "the last free slot". Tasks found full are remembered
   and left out of the next queries until a slot frees, so their backlog never blocks others.
2. rate limits (:mod:`scheduler_application.rate_limiting`): a limited run gets a later
   ``not_before`` and a ``pending → pending`` event saying why; it is never dropped. A run
   whose required labels no live worker carries is held before this gate (``no_eligible_worker``,
   see routing), so that it spends no token.
   Before it, the queue's settings (:mod:`scheduler_application.queue_gate`): a run of a
   paused queue, or of one at its ``max_concurrency``, stays pending untouched; the queue's
   stored rate limit replaces its configured default.
3. routing (:mod:`scheduler_application.routing`): the message goes to the task's queue or to a
   chosen worker's direct queue; the run's ``queue`` records where it went, its ``queued`` event
   which worker and why. ``redispatch_orphaned`` moves runs waiting in the direct queue of a worker
   that stopped taking work (offline, silent or draining) to a new target.

Runs created by a use case that holds the relay (a manual trigger, a retry) pass the same gates
inside the transaction that creates them (:meth:`RunRelay.dispatch_new`): a run that may go at
once is written ``queued`` directly and published right after the commit, which saves the relay
its own transaction on the path from trigger to start. When the queue lives in the same database
(:class:`~scheduler_application.ports.queue.TransactionalRunQueue`, the postgres backend), the
messages are written in the transaction itself: they exist exactly when the runs they name do,
and nothing is published after the commit.

A run the dispatcher fired ahead of its slot (``dispatcher.fire_ahead_seconds``) is queued with
``not_before`` = its slot, and so is its message: a queue in the database makes the row
claimable only from then; for any other queue the relay holds the message and publishes it at
that instant (:meth:`RunRelay._hold`). A gate that postpones such a run never postpones it to
before its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from scheduler_application.ports.clock import Clock
from scheduler_application.ports.queue import RunMessage, RunQueue, TransactionalRunQueue
from scheduler_application.ports.tracing import NO_TRACER, SpanKind, Tracer
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_application.queue_gate import blocked_queues, unqueue_paused
from scheduler_application.queue_gate import decide as decide_queues
from scheduler_application.rate_limiting import RunRateLimits
from scheduler_application.routing import Route, Router
from scheduler_domain.concurrency import ConcurrencyPolicy
from scheduler_domain.events import RunEvent
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import format_instant
from scheduler_domain.status import RunStatus
from scheduler_domain.task import DispatchStrategy, Task
from scheduler_domain.worker import Worker

RELAY_ACTOR = "relay"
logger = logging.getLogger("scheduler.relay")
#: Messages whose publish failed, kept for another try (beyond this, the oldest are left to
#: ``republish_stale_queued``).
MAX_UNPUBLISHED = 10_000
#: What dispatching changes on a pending run: queued (status, time, where it went) or postponed
#: by a rate limit (``not_before``). The rows are locked, so only these need writing.
DISPATCHED_FIELDS = ("status", "queue", "queued_at", "not_before")
DEFAULT_BATCH = 100
#: Rounds of ``relay_pending`` per call: each leaves out the tasks the previous one found full.
_ROUNDS = 3
#: Direct queues looked up per query when re-dispatching.
_QUEUE_CHUNK = 500


def run_message(run: TaskRun) -> RunMessage:
    """The queue message for a queued run: how to find and claim it, never its payload."""
    if run.queued_at is None:
        raise ValueError(f"run {run.id} has not been queued")
    return RunMessage(
        run_id=run.id,
        task_id=run.task_id,
        attempt=run.attempt,
        token=run.version,
        queue=run.queue,
        priority=run.priority,
        enqueued_at=run.queued_at,
        traceparent=run.traceparent,
        not_before=run.not_before,
    )


@dataclass(slots=True)
class Dispatched:
    """What the gates decided about runs inside a unit of work: the events to store (after the
    runs they belong to) and the messages to publish once it commits. ``staged`` once the
    messages were written in the transaction itself (:meth:`RunRelay.stage`)."""

    events: list[RunEvent] = field(default_factory=list)
    messages: list[RunMessage] = field(default_factory=list)
    staged: bool = False


class RunRelay:
    """Counters in ``stats`` (``held_max_concurrent``, ``rate_limited``, ``routed_fallback``,
    ``redispatched``) are for the metrics exporter; they only grow."""

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        queue: RunQueue,
        router: Router | None = None,
        rate_limits: RunRateLimits | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self._uow_factory = uow_factory
        self._tracer = tracer
        self._clock = clock
        self._queue = queue
        #: The queue lives in the database: messages are written in the unit of work itself.
        self._in_database = queue if isinstance(queue, TransactionalRunQueue) else None
        self._router = router if router is not None else Router()
        self._rate_limits = rate_limits
        #: Tasks at their max_concurrent: id -> the limit, re-checked at the next call.
        self._full: dict[str, int] = {}
        self.stats: Counter[str] = Counter()
        #: Queued runs whose publish failed: published again in the background (see
        #: :meth:`_publish_or_keep`) until the queue takes them.
        self._unpublished: dict[str, RunMessage] = {}
        self._retrying: asyncio.Task[None] | None = None
        #: Publishes waiting for their messages' ``not_before`` (:meth:`_hold`).
        self._holding: dict[asyncio.Task[None], int] = {}
        #: First and longest wait between background tries of failed publishes, seconds.
        self.retry_delays = (0.2, 5.0)
        #: How long :meth:`publish` waits for the queue before leaving it to the background.
        self.publish_timeout = 1.0
        #: How long :meth:`aclose` waits for held messages' instants (runs fired ahead).
        self.hold_grace = 5.0

    async def relay_pending(self, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """Queue and publish up to ``limit`` pending runs whose ``not_before`` has passed.

        If publishing fails the error propagates after the commit; the runs stay ``queued`` and
        ``republish_stale_queued`` publishes them once they count as stale.
        """
        now = self._clock.now()
        messages: list[RunMessage] = []
        changed = False
        async with self._uow_factory() as uow:
            excluded = await self._still_full(uow)
            paused, excluded_queues = await blocked_queues(uow)
            if paused:  # runs a concurrent relay queued as the pause committed: back to pending
                changed = bool(await unqueue_paused(uow, paused, now=now, actor=RELAY_ACTOR))
                excluded_queues |= paused
            budget = limit
            for _ in range(_ROUNDS):
                if excluded or excluded_queues:
                    runs = await uow.runs.pending_due_excluding(
                        now,
                        limit=budget,
                        exclude_task_ids=sorted(excluded),
                        exclude_queues=sorted(excluded_queues),
                    )
                else:
                    runs = await uow.runs.pending_due(now, limit=budget)
                if not runs:
                    break
                # Stamped after the rows were taken: a run committed while we waited for them
                # must not look queued before it was created.
                outcome = await self._dispatch(uow, runs, self._clock.now())
                messages.extend(outcome.messages)
                changed = changed or outcome.changed
                budget -= len(runs)
                if budget <= 0 or not (outcome.full_tasks or outcome.held_queues):
                    break
                excluded |= outcome.full_tasks
                excluded_queues |= outcome.held_queues
            if not changed:
                return []
            staged = await self._stage_messages(uow, messages)
            await uow.commit()
        if messages and not staged:
            await self._publish_or_keep(messages)
        return messages

    async def relay_runs(self, run_ids: Sequence[str]) -> list[RunMessage]:
        """Publish these runs now if they are still pending and due (the dispatcher calls this
        right after committing runs it created; the relay loop covers any it cannot take)."""
        if not run_ids:
            return []
        now = self._clock.now()
        async with self._uow_factory() as uow:
            runs = await uow.runs.pending_among(list(run_ids), now)
            if not runs:
                return []
            outcome = await self._dispatch(uow, runs, self._clock.now())
            if not outcome.changed:
                return []
            staged = await self._stage_messages(uow, outcome.messages)
            await uow.commit()
        if outcome.messages and not staged:
            await self._publish_or_keep(outcome.messages)
        return outcome.messages

    async def republish_stale_queued(
        self, older_than: timedelta, limit: int = DEFAULT_BATCH
    ) -> list[RunMessage]:
        """Publish again runs queued more than ``older_than`` ago and still unclaimed — those
        whose message may be gone (a publish that failed for good, a broker that lost it).

        A run long queued is most often just behind a backlog, its message waiting in line:
        so per queue, only as many stale runs are published again as the queue is short of
        messages (runs queued in the database minus messages ready in the queue), oldest
        first; a queue whose depth cannot be read gets all of its stale runs published. The
        republished runs' ``queued_at`` is moved to now, so the next pass waits another
        ``older_than`` before looking at them again.
        """
        now = self._clock.now()
        async with self._uow_factory() as uow:
            stale = await uow.runs.stale_queued(now - older_than, limit=limit)
            return await self._republish(uow, stale, now)

    async def republish_held(self, past: timedelta, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """Publish again the runs fired ahead that are still queued ``past`` after their slot,
        on a queue outside the database: the dispatcher that held their message until the
        slot may have died with it (a live one publishes at the slot), and they need not wait
        for ``republish_stale_queued``'s threshold. Only as far as their queue is short of
        messages, like stale runs; a republished run's ``queued_at`` moves past its slot, so
        it is not taken again here. Nothing to do on a queue in the database."""
        if self._in_database is not None:
            return []
        now = self._clock.now()
        async with self._uow_factory() as uow:
            held = await uow.runs.held_past_due(now - past, limit=limit)
            return await self._republish(uow, held, now)

    async def _republish(
        self, uow: UnitOfWork, candidates: list[TaskRun], now: datetime
    ) -> list[RunMessage]:
        """Publish again those of ``candidates`` (queued runs, oldest first) whose queue is
        short of messages, moving their ``queued_at`` to now; commits ``uow``."""
        if not candidates:
            return []
        by_queue: dict[str, list[TaskRun]] = {}
        for run in candidates:
            by_queue.setdefault(run.queue, []).append(run)
        queued = await uow.runs.count_queued(sorted(by_queue))
        chosen: list[TaskRun] = []
        for queue, runs in by_queue.items():
            missing = await self._missing_messages(queue, queued.get(queue, 0))
            take = runs if missing is None else runs[:missing]
            chosen.extend(take)
            self.stats["republish_skipped"] += len(runs) - len(take)
        if not chosen:
            return []
        messages: list[RunMessage] = []
        for run in chosen:
            run.queued_at = now
            messages.append(run_message(run))
        await uow.runs.update_many([(run, run.version) for run in chosen], fields=("queued_at",))
        staged = await self._stage_messages(uow, messages)
        await uow.commit()
        if not staged:
            await self._publish_or_keep(messages)
        return messages

    async def _missing_messages(self, queue: str, queued: int) -> int | None:
        """How many queued runs of ``queue`` have no message waiting in it (None: unknown)."""
        try:
            depth = await self._queue.depth(queue)
        except Exception:
            return None
        return max(queued - depth, 0)

    async def redispatch_orphaned(self, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """Route again the queued runs waiting in the direct queue of a worker that no longer
        takes work (offline, silent past the router's timeout, or draining)."""
        now = self._clock.now()
        timeout = self._router.worker_timeout
        messages: list[RunMessage] = []
        async with self._uow_factory() as uow:
            workers = await uow.workers.list()
            live = [w for w in workers if w.accepts_work(now=now, timeout=timeout)]
            live_ids = {w.id for w in live}
            dead = sorted(w.direct_queue for w in workers if w.id not in live_ids)
            orphans: list[TaskRun] = []
            for start in range(0, len(dead), _QUEUE_CHUNK):
                if len(orphans) >= limit:
                    break
                chunk = dead[start : start + _QUEUE_CHUNK]
                orphans.extend(await uow.runs.queued_in(chunk, limit=limit - len(orphans)))
            if not orphans:
                return []
            tasks = await _tasks_of(uow, orphans)
            writes: list[tuple[TaskRun, int]] = []
            events: list[RunEvent] = []
            for run in orphans:
                task = tasks.get(run.task_id)
                if task is None:
                    continue
                route = self._router.route(task, live, now=now)
                if route.hold:
                    continue  # no live worker may run it: it waits where it is, for now
                previous = run.queue
                run.queue = route.queue
                run.queued_at = now
                detail = {**route.detail(), "reason": "worker unavailable", "from_queue": previous}
                event = RunEvent(
                    run_id=run.id,
                    task_id=run.task_id,
                    from_status=RunStatus.QUEUED,
                    to_status=RunStatus.QUEUED,
                    at=now,
                    actor=RELAY_ACTOR,
                    detail={**detail, "queue": run.queue},
                )
                writes.append((run, run.version))
                events.append(event)
                messages.append(run_message(run))
                self.stats["redispatched"] += 1
            if not messages:
                return []
            await uow.runs.update_many(writes, fields=("queue", "queued_at"))
            await uow.events.add_many(events)
            staged = await self._stage_messages(uow, messages)
            await uow.commit()
        if not staged:
            await self._publish_or_keep(messages)
        return messages

    # -- runs created by a use case --------------------------------------------------------------

    async def dispatch_new(
        self, uow: UnitOfWork, runs: Sequence[TaskRun], *, tasks: Sequence[Task] = ()
    ) -> Dispatched:
        """Pass runs this unit of work is creating through the gates, before they are written.

        Each run comes back marked ``queued`` (with its route) or postponed by a rate limit, or
        left ``pending`` (its task at ``max_concurrent``, or locked by another dispatcher): the
        relay loop takes those later. The caller adds the runs, then ``events``, then calls
        :meth:`stage` and commits, then :meth:`publish`. ``tasks``: the runs' tasks if the
        caller has read them already in this unit of work.
        """
        known = {task.id: task for task in tasks}
        outcome = await self._gate(uow, list(runs), self._clock.now(), known)
        return Dispatched(events=outcome.events, messages=outcome.messages)

    async def stage(self, uow: UnitOfWork, dispatched: Dispatched) -> None:
        """Write the messages in the unit of work's own transaction when the queue lives in the
        same database; otherwise they wait for :meth:`publish` after the commit."""
        dispatched.staged = await self._stage_messages(uow, dispatched.messages)

    async def publish(self, dispatched: Dispatched) -> bool:
        """Publish what the committed unit of work queued (nothing if it was staged); False
        when the queue did not take it at once.

        Never raises, and waits at most ``publish_timeout``: the runs are committed, and a
        publish that fails or hangs (the broker is down or reconnecting) is tried again in the
        background until the queue takes it — the caller (an API request) is not held up.
        """
        if not dispatched.messages or dispatched.staged:
            return True
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self._publish_or_keep(dispatched.messages)
        except Exception as error:
            self._keep(dispatched.messages)  # again, if cut off by the timeout: idempotent
            logger.warning(
                "publishing %d new runs failed (%s); retrying in the background",
                len(dispatched.messages),
                "timed out" if isinstance(error, TimeoutError) else error,
            )
            return False
        return True

    @property
    def unpublished(self) -> int:
        """Messages waiting for another try at publishing."""
        return len(self._unpublished)

    async def aclose(self) -> None:
        """Stop retrying and holding: messages held for an instant within ``hold_grace`` are
        still published then (a graceful stop fired them ahead), the rest are dropped. What
        was still unpublished is left to ``republish_stale_queued`` (the runs are ``queued`` in
        the database; nothing is lost, only delayed)."""
        if self._holding:
            await asyncio.wait(list(self._holding), timeout=self.hold_grace)
        for task in list(self._holding):
            task.cancel()
        for task in list(self._holding):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
            self._retrying = None

    async def _publish_or_keep(self, messages: Sequence[RunMessage]) -> None:
        """Publish after a commit; on failure keep the messages and try again in the
        background (with backoff) before re-raising, so a broker outage delays these runs by
        about as long as it lasts, not by ``republish_stale_queued``'s staleness threshold.
        Messages not to be delivered yet (runs fired ahead) are held and published at their
        ``not_before`` (see :meth:`_hold`)."""
        now = self._clock.now()
        later = [m for m in messages if m.not_before is not None and m.not_before > now]
        if later:
            self._hold(later)
            messages = [m for m in messages if m.not_before is None or m.not_before <= now]
            if not messages:
                return
        try:
            with self._publish_spans(messages) as traced:
                await self._queue.publish_many(traced)
        except Exception:
            self._keep(messages)
            raise

    def _hold(self, messages: Sequence[RunMessage]) -> None:
        """Publish each message at its ``not_before``, from a background task per instant.
        Only a queue outside the database needs this (one in it holds the row until then).
        Held messages are not lost if this process stops first: their runs are ``queued`` in
        the database, and ``republish_stale_queued`` publishes them once stale."""
        by_time: dict[datetime, list[RunMessage]] = {}
        for message in messages:
            assert message.not_before is not None
            by_time.setdefault(message.not_before, []).append(message)
        for at, batch in by_time.items():
            task = asyncio.create_task(self._publish_at(at, batch), name="relay-hold")
            self._holding[task] = len(batch)
            task.add_done_callback(self._release_hold)

    def _release_hold(self, task: asyncio.Task[None]) -> None:
        self._holding.pop(task, None)

    async def _publish_at(self, at: datetime, messages: list[RunMessage]) -> None:
        await asyncio.sleep(max((at - self._clock.now()).total_seconds(), 0.0))
        ready = [replace(m, not_before=None) for m in messages]
        with contextlib.suppress(Exception):  # kept and retried by _publish_or_keep
            await self._publish_or_keep(ready)

    @property
    def holding(self) -> int:
        """Messages held for their ``not_before`` (runs fired ahead of their slots)."""
        return sum(self._holding.values())

    def _keep(self, messages: Sequence[RunMessage]) -> None:
        for message in messages:
            self._unpublished[message.run_id] = message
        while len(self._unpublished) > MAX_UNPUBLISHED:
            del self._unpublished[next(iter(self._unpublished))]
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry_unpublished(), name="relay-retry")

    async def _retry_unpublished(self) -> None:
        first, longest = self.retry_delays
        delay = first
        while self._unpublished:
            await asyncio.sleep(delay)
            batch = list(self._unpublished.values())[: DEFAULT_BATCH * 5]
            try:
                await self._queue.publish_many(batch)
            except Exception as error:
                logger.debug("publishing %d kept messages failed again (%s)", len(batch), error)
                delay = min(delay * 2, longest)
                continue
            for message in batch:
                if self._unpublished.get(message.run_id) is message:
                    del self._unpublished[message.run_id]
            self.stats["republished_after_failure"] += len(batch)
            delay = first

    async def _stage_messages(self, uow: UnitOfWork, messages: Sequence[RunMessage]) -> bool:
        if not messages or self._in_database is None:
            return False
        with self._publish_spans(messages) as traced:
            return await self._in_database.publish_within(uow, traced)

    @contextlib.contextmanager
    def _publish_spans(self, messages: Sequence[RunMessage]) -> Iterator[Sequence[RunMessage]]:
        """A ``run.publish`` span per message, in its run's trace, open while the messages are
        handed to the queue; the messages are given the span's ``traceparent``, so that the
        worker's ``run.consume`` span follows from the publish."""
        if self._tracer is NO_TRACER:
            yield messages
            return
        traced: list[RunMessage] = []
        with contextlib.ExitStack() as spans:
            for message in messages:
                span = spans.enter_context(
                    self._tracer.span(
                        "run.publish",
                        parent=message.traceparent,
                        root=message.traceparent is None,
                        kind=SpanKind.PRODUCER,
                        attributes={
                            "messaging.destination.name": message.queue,
                            "messaging.batch.message_count": len(messages),
                            "scheduler.run.attempt": message.attempt,
                            "scheduler.run.priority": message.priority,
                        },
                    )
                )
                traceparent = span.traceparent or message.traceparent
                traced.append(replace(message, traceparent=traceparent))
            yield traced

    # -- the gates -------------------------------------------------------------------------------

    async def _still_full(self, uow: UnitOfWork) -> set[str]:
        """The remembered full tasks that are still full; the others are forgotten."""
        if not self._full:
            return set()
        counts = await uow.runs.count_in_flight(sorted(self._full))
        self._full = {
            task_id: cap for task_id, cap in self._full.items() if counts.get(task_id, 0) >= cap
        }
        return set(self._full)

    async def _dispatch(self, uow: UnitOfWork, runs: list[TaskRun], now: datetime) -> _Outcome:
        """Gate, route and mark ``queued`` the given locked pending runs, in order."""
        outcome = await self._gate(uow, runs, now)
        # The runs are locked (pending_due … SKIP LOCKED): one write for all of them.
        await uow.runs.update_many(outcome.writes, fields=DISPATCHED_FIELDS)
        await uow.events.add_many(outcome.events)
        outcome.writes.clear()
        outcome.events.clear()
        return outcome

    async def _gate(
        self,
        uow: UnitOfWork,
        runs: list[TaskRun],
        now: datetime,
        known: dict[str, Task] | None = None,
    ) -> _Outcome:
        """Decide about each pending run, in order, in memory: what to write is collected in
        the outcome (``writes`` with the versions read, ``events``, ``messages``)."""
        outcome = _Outcome()
        if known and all(run.task_id in known for run in runs):
            tasks = known
        else:
            tasks = await _tasks_of(uow, runs)
        capped = sorted(t.id for t in tasks.values() if concurrency_cap(t) is not None)
        locked: set[str] = set()
        in_flight: dict[str, int] = {}
        if capped:
            locked = await uow.tasks.lock_many(capped)
            in_flight = await uow.runs.count_in_flight(sorted(locked)) if locked else {}
        queues = await decide_queues(uow, (run.queue for run in runs))
        workers: list[Worker] | None = None
        rate_batch = self._rate_limits.batch() if self._rate_limits is not None else None
        for run in runs:
            task = tasks.get(run.task_id)
            if task is None:
                continue  # deleted meanwhile: its runs go with it
            cap = concurrency_cap(task)
            if cap is not None:
                if task.id not in locked:
                    continue  # another transaction is deciding about this task: next pass
                if in_flight.get(task.id, 0) >= cap:
                    self._full[task.id] = cap
                    outcome.full_tasks.add(task.id)
                    self.stats["held_max_concurrent"] += 1
                    continue
            held = queues.hold(run.queue)
            if held is not None:  # stays pending, untouched, until the queue allows it
                outcome.held_queues.add(run.queue)
                self.stats[f"held_{held}"] += 1
                continue
            if (task.strategy is not DispatchStrategy.QUEUE or task.labels) and workers is None:
                workers = await uow.workers.list()
            if task.labels and not self._router.eligible(task, workers or [], now=now):
                # Held before the rate limit, so that a run no worker may take spends no token.
                self._hold_run(outcome, run, task, now)
                continue
            if (
                self._rate_limits is not None
                and rate_batch is not None
                and self._rate_limits.limited(task, queue_limit=queues.rate_limit(run.queue))
            ):
                delay = await self._rate_limits.admit(
                    task, now=now, batch=rate_batch, queue_limit=queues.rate_limit(run.queue)
                )
                if delay is not None:
                    self._postpone(
                        outcome,
                        run,
                        until=now + delay.wait,
                        detail={"reason": "rate_limited", "bucket": delay.key},
                    )
                    self.stats["rate_limited"] += 1
                    continue
            route = self._router.route(task, workers or [], now=now, default_queue=run.queue)
            if route.hold:  # not after the check above (same workers, same instant): contract
                self._hold_run(outcome, run, task, now)
                continue
            queues.admitted(run.queue)
            self._queue_run(outcome, run, route, now)
            in_flight[task.id] = in_flight.get(task.id, 0) + 1
            outcome.messages.append(run_message(run))
            outcome.changed = True
        return outcome

    def _hold_run(self, outcome: _Outcome, run: TaskRun, task: Task, now: datetime) -> None:
        """No live worker may run ``task`` (its labels): the run waits, pending, and the relay
        looks again later (:func:`_hold_for`)."""
        self._postpone(
            outcome,
            run,
            until=now + _hold_for(now - run.created_at),
            detail={"reason": "no_eligible_worker", "labels": sorted(task.labels)},
        )
        self.stats["held_no_eligible_worker"] += 1

    def _postpone(
        self, outcome: _Outcome, run: TaskRun, *, until: datetime, detail: dict[str, object]
    ) -> None:
        """Keep the run pending until ``until``, saying why in a ``pending → pending`` event;
        never until before its logical time (a run fired ahead waits for its slot whatever
        held it; every other run's is past already)."""
        until = max(until, run.scheduled_for)
        outcome.changed = True
        outcome.writes.append((run, run.version))
        run.not_before = until
        outcome.events.append(
            RunEvent(
                run_id=run.id,
                task_id=run.task_id,
                from_status=RunStatus.PENDING,
                to_status=RunStatus.PENDING,
                at=self._clock.now(),
                actor=RELAY_ACTOR,
                detail={**detail, "not_before": format_instant(until)},
            )
        )

    def _queue_run(self, outcome: _Outcome, run: TaskRun, route: Route, now: datetime) -> None:
        """Mark the run queued where ``route`` says. A run fired ahead of its slot is queued
        now, to be delivered at the slot: its ``not_before`` (and its message's) says when."""
        outcome.writes.append((run, run.version))
        run.queue = route.queue
        event = run.mark_queued(now=now, actor=RELAY_ACTOR)
        if run.trigger is RunTrigger.SCHEDULE and run.scheduled_for > now:  # fired ahead
            run.not_before = run.scheduled_for
            event = replace(
                event, detail={**event.detail, "deliver_at": format_instant(run.scheduled_for)}
            )
        if route.targeted:
            event = replace(event, detail={**event.detail, **route.detail()})
            if route.fallback:
                self.stats["routed_fallback"] += 1
        outcome.events.append(event)


def concurrency_cap(task: Task) -> int | None:
    """How many runs of ``task`` may be queued or running at once (None: no limit): its
    ``max_concurrent``, and 1 under ``buffer_one`` — the buffered run waits, pending, until the
    active one has finished (succeeded, failed, cancelled, timed out or lost), as Temporal's
    ``BufferOne`` does, instead of starting beside it."""
    if task.concurrency is ConcurrencyPolicy.BUFFER_ONE:
        return 1
    return task.max_concurrent


def _hold_for(waited: timedelta) -> timedelta:
    """How long a run no worker may take waits before the relay looks again: a second at
    first, then half as long as it has waited so far, at most a minute — a worker that starts
    is found quickly, and a run that waits for hours writes a dozen events, not thousands."""
    return min(max(waited / 2, timedelta(seconds=1)), timedelta(minutes=1))


class _Outcome:
    __slots__ = ("changed", "events", "full_tasks", "held_queues", "messages", "writes")

    def __init__(self) -> None:
        self.messages: list[RunMessage] = []
        self.full_tasks: set[str] = set()
        #: Queues paused or at their max_concurrency: left out of the next rounds.
        self.held_queues: set[str] = set()
        self.changed = False
        #: ``(run, version read)`` and events, written together at the end of ``_dispatch``.
        self.writes: list[tuple[TaskRun, int]] = []
        self.events: list[RunEvent] = []


async def _tasks_of(uow: UnitOfWork, runs: Sequence[TaskRun]) -> dict[str, Task]:
    ids = list(dict.fromkeys(run.task_id for run in runs))
    return {task.id: task for task in await uow.tasks.get_many(ids)}
