"""The worker's main loop: consume, claim, execute, report, ack — and drain on shutdown.

An operator's drain (seen on a heartbeat) only pauses consuming: the worker finishes what it
holds, stays registered and heartbeating (``draining``), and consumes again once undrained.
``stop()`` (SIGTERM) drains and exits.

Delivery is at least once; execution is made exactly once by the claim. Every delivery is
acknowledged only after its outcome is committed (or after the claim found nothing to do), so
a worker that dies mid-run leaves the message to be delivered again and the run to the reaper.

Each delivery has its own handler task, but claims and outcomes travel in batches
(:mod:`scheduler_application.group_commit`): the handlers waiting at the same moment share one
claim transaction and one outcome transaction, so a busy worker spends a few statements on many
runs while an idle one sends each at once. Runs arriving one by one at a steady rate are
gathered by a short window (``WorkerOptions.batch_window``) that a slow or idle worker skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from scheduler_application.errors import Conflict, NotFound, Unavailable
from scheduler_application.execution.service import (
    ClaimedRun,
    ExecutionService,
    Outcome,
    OutcomeAnswer,
)
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.group_commit import Flush, GroupCommit
from scheduler_application.log_context import bind, trace_id
from scheduler_application.ports.executor import ExecutionResult, Executor
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.queue import Delivery, RunQueue
from scheduler_application.ports.redaction import NO_SECRET_SCOPE, SecretScope
from scheduler_application.ports.tracing import NO_TRACER, Span, SpanKind, Tracer
from scheduler_domain.worker import Worker
from scheduler_worker.executors import ExecutorRegistry, UnknownExecutorError, run_executor
from scheduler_worker.heartbeat import HeartbeatLoop
from scheduler_worker.live_output import LiveOutput, OutputReports
from scheduler_worker.retrying import retry_until

logger = logging.getLogger("scheduler.worker")

__version__ = "0.1.0"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    name: str = ""
    queues: tuple[str, ...] = ("default",)
    labels: frozenset[str] = frozenset()
    capacity: int = 10
    heartbeat_interval: timedelta = timedelta(seconds=10)
    lease: timedelta = timedelta(seconds=30)
    drain_timeout: timedelta = timedelta(seconds=30)
    executor_grace_seconds: float = 10.0
    #: How often held runs are checked for a cancellation between heartbeats (see
    #: :mod:`scheduler_worker.heartbeat`): about how long a cancelled run's process lives on.
    stop_check_interval: timedelta = timedelta(seconds=0.5)
    #: How often the new lines of running runs are reported, for their pages to follow them
    #: live (:mod:`scheduler_worker.live_output`); None: only with the outcome.
    live_output_interval: timedelta | None = timedelta(seconds=0.5)
    #: How long a claim or outcome waits for others to share its transaction while runs come
    #: fast enough for a wait to gather others (:class:`~scheduler_application.group_commit.
    #: GroupCommit`'s window): runs arriving one by one a little apart are then claimed and
    #: completed in groups. Slower, or idle, nothing waits; zero never waits.
    batch_window: timedelta = timedelta(milliseconds=1)

    def display_name(self) -> str:
        return self.name or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class _InFlight:
    claimed: ClaimedRun
    delivery: Delivery
    output: LiveOutput
    #: The handler's task while (and only while) the executor runs: what ``_abandon`` cancels.
    task: asyncio.Task[Any] | None = None
    stop_requested: bool = False


@dataclass(slots=True)
class WorkerStats:
    """What this process did, for tests, logs and metrics."""

    claimed: int = 0
    duplicates: int = 0
    completed: int = 0
    released: int = 0
    stopped: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


class WorkerRuntime:
    """One worker process's work. ``run()`` returns after ``stop()`` has drained it; an
    operator's drain pauses consuming until the worker is undrained."""

    def __init__(
        self,
        *,
        execution: ExecutionService,
        workers: WorkerService,
        queue: RunQueue,
        executors: ExecutorRegistry,
        options: WorkerOptions,
        observer: RunObserver = NO_OBSERVER,
        tracer: Tracer = NO_TRACER,
        secret_scope: SecretScope = NO_SECRET_SCOPE,
    ) -> None:
        """``tracer``: each delivery is a ``run.consume`` span in its run's trace (continued
        from the message's ``traceparent``), with ``run.execute`` inside it. ``secret_scope``
        hides a run's ``secret_env`` values from this process's logs and spans while it runs;
        they are masked in its stored output in any case."""
        self._tracer = tracer
        self._secret_scope = secret_scope
        self._observer = observer  # hears of outages; outcomes are the ExecutionService's
        self._execution = execution
        self._workers = workers
        self._queue = queue
        self._executors = executors
        self._options = options
        self._in_flight: dict[str, _InFlight] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        #: An operator's drain: consuming is paused while set (see ``pause``/``resume``).
        self._paused = False
        self._consuming_changed = asyncio.Event()
        self._consumer: AsyncIterator[Delivery] | None = None
        self.worker: Worker | None = None
        self.stats = WorkerStats()
        self._claims: GroupCommit[Delivery, ClaimedRun | None] = self._group(self._claim_batch)
        self._outcomes: GroupCommit[Outcome, OutcomeAnswer] = self._group(self._complete_batch)
        #: Held by each write of several of this worker's running runs — a batch of outcomes,
        #: a lease renewal, a live output report — so that no two run at once: on two
        #: connections, two such statements over the same runs could each lock one the other
        #: waits for (a deadlock PostgreSQL breaks by failing one of them after a second).
        self._run_writes = asyncio.Lock()

    def _group(self, flush: Flush[T, R]) -> GroupCommit[T, R]:
        return GroupCommit(flush, window=self._options.batch_window.total_seconds())

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def active_runs(self) -> int:
        return len(self._in_flight)

    async def wait_started(self) -> Worker:
        await self._started.wait()
        assert self.worker is not None
        return self.worker

    @property
    def consuming(self) -> bool:
        """Whether the worker takes new deliveries (False while drained, and once stopping)."""
        return not self._paused and not self._stopping.is_set()

    def stop(self) -> None:
        """Begin draining: stop consuming, let in-flight runs finish up to the drain timeout."""
        self._stopping.set()
        self._consuming_changed.set()

    def pause(self) -> None:
        """An operator drained the worker: take no new delivery; runs in hand go on."""
        if not self._paused:
            self._paused = True
            self._consuming_changed.set()
            logger.info("drained by an operator: no new runs until undrained")

    def resume(self) -> None:
        """An operator undrained the worker: consume again."""
        if self._paused:
            self._paused = False
            self._consuming_changed.set()
            logger.info("undrained: taking runs again")

    async def run(self) -> None:
        options = self._options
        self.worker = await retry_until(
            lambda: self._workers.register(
                RegisterWorker(
                    name=options.display_name(),
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    queues=options.queues,
                    capacity=options.capacity,
                    labels=options.labels,
                    software_version=__version__,
                )
            ),
            what="register the worker",
            stop=self._stopping,
        )
        if self.worker is None:
            return
        worker = self.worker
        bind(worker_id=worker.id)  # every line from here on, and the tasks started below
        # Batches run in the context they are made in: this worker's, not one run's.
        self._claims = self._group(self._claim_batch)
        self._outcomes = self._group(self._complete_batch)
        logger.info(
            "worker %s registered as %s: queues=%s capacity=%d",
            worker.name,
            worker.id,
            ",".join(options.queues),
            options.capacity,
        )
        heartbeat = HeartbeatLoop(
            execution=self._execution,
            worker_id=worker.id,
            interval=options.heartbeat_interval,
            lease=options.lease,
            active=self._active_tokens,
            on_stop=self._abandon,
            on_drain=self.pause,
            on_resume=self.resume,
            on_gone=self.stop,
            observer=self._observer,
            stop_check_interval=options.stop_check_interval,
            run_writes=self._run_writes,
        )
        reports = OutputReports(
            execution=self._execution,
            worker_id=worker.id,
            interval=(options.live_output_interval or timedelta(days=1)).total_seconds(),
            in_hand=self._live_outputs,
            run_writes=self._run_writes,
        )
        self._started.set()
        async with heartbeat.running(), reports.running():
            queues = [*options.queues, worker.direct_queue]
            consumer: asyncio.Task[None] | None = None
            while not self._stopping.is_set():
                self._consuming_changed.clear()
                if self.consuming and consumer is None:
                    consumer = asyncio.create_task(self._consume(queues))
                elif not self.consuming and consumer is not None:
                    await _cancelled(consumer)
                    await self._close_consumer()
                    consumer = None
                await self._consuming_changed.wait()
            if consumer is not None:
                await _cancelled(consumer)
            await self._drain()
            await self._close_consumer()
        # Deregistering also deletes the worker's direct queue if it is empty.
        try:
            await retry_until(
                lambda: self._workers.deregister(worker.id),
                what="deregister the worker",
                attempts=5,
            )
        except NotFound:
            logger.warning("worker %s was already retired", worker.id)
        logger.info("worker %s stopped: %s", worker.id, self.stats)

    async def _consume(self, queues: Sequence[str]) -> None:
        while self.consuming:
            try:
                self._consumer = self._queue.consume(queues, prefetch=self._options.capacity)
                async for delivery in self._consumer:
                    handler = asyncio.create_task(self._handle(delivery))
                    self._handlers.add(handler)
                    handler.add_done_callback(self._handlers.discard)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, Unavailable):
                    self._observer.dependency_unavailable(error.dependency)
                logger.exception("consuming from %s failed; retrying in 1 s", ",".join(queues))
                await self._close_consumer()
                await asyncio.sleep(1.0)

    async def _close_consumer(self) -> None:
        """Close the broker consumer: what it had prefetched and not handed out goes back to
        the queue for other workers (deliveries still being run come back too, and their
        second delivery finds the run claimed: a duplicate, dropped), and the worker's direct
        queue is no longer in use, so deregistering can delete it."""
        consumer, self._consumer = self._consumer, None
        close = getattr(consumer, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:
                logger.warning("closing the consumer failed", exc_info=True)

    async def _drain(self) -> None:
        timeout = self._options.drain_timeout.total_seconds()
        if self._handlers:
            logger.info("draining: waiting up to %.0f s for %d runs", timeout, len(self._handlers))
            _, pending = await asyncio.wait(set(self._handlers), timeout=timeout)
            if pending:
                await self._release_all()
                await asyncio.wait(pending, timeout=self._options.executor_grace_seconds + 5)

    async def _release_all(self) -> None:
        """Drain timeout: give back what is still running so it is retried at once elsewhere."""
        for run_id, flight in list(self._in_flight.items()):
            flight.stop_requested = True
            if flight.task is not None:
                flight.task.cancel()
            try:
                await self._execution.release(run_id, flight.claimed.token)
                self.stats.released += 1
                logger.warning("released run %s at drain timeout", run_id)
            except (Conflict, NotFound):
                pass
            except Exception:
                logger.exception("could not release run %s; its lease will expire", run_id)

    # -- one delivery ----------------------------------------------------------------------------

    def _active_tokens(self) -> list[tuple[str, int]]:
        return [(run_id, f.claimed.token) for run_id, f in self._in_flight.items()]

    def _live_outputs(self) -> list[tuple[str, int, LiveOutput]]:
        return [(run_id, f.claimed.token, f.output) for run_id, f in self._in_flight.items()]

    def _abandon(self, run_id: str) -> None:
        """The heartbeat says the run was cancelled or taken away: stop executing it."""
        flight = self._in_flight.get(run_id)
        if flight is not None and flight.task is not None and not flight.stop_requested:
            flight.stop_requested = True
            flight.task.cancel()
            self.stats.stopped += 1
            logger.info("stopping run %s: cancelled or no longer ours", run_id)

    async def _handle(self, delivery: Delivery) -> None:
        assert self.worker is not None
        message = delivery.message
        # This handler is its own asyncio task: the log fields last as long as it does.
        bind(run_id=message.run_id, task_id=message.task_id, trace_id=trace_id(message.traceparent))
        with self._tracer.span(
            "run.consume",
            parent=message.traceparent,
            root=message.traceparent is None,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.destination.name": message.queue,
                "scheduler.run.attempt": message.attempt,
                "scheduler.worker_id": self.worker.id,
                "scheduler.redelivered": delivery.redelivered,
            },
        ) as span:
            await self._consume_one(delivery, span)

    async def _consume_one(self, delivery: Delivery, span: Span) -> None:
        message = delivery.message
        try:
            claimed = await self._claims.submit(delivery)
        except Exception as error:
            logger.exception("claim of run %s failed; handing the message back", message.run_id)
            span.set_error(f"claim failed: {type(error).__name__}")
            await asyncio.sleep(1.0)
            await self._settle_delivery(delivery, requeue=True)
            return
        if claimed is None:
            self.stats.duplicates += 1
            span.set_attribute("scheduler.claim", "duplicate")
            await self._settle_delivery(delivery)
            return
        self.stats.claimed += 1
        span.set_attribute("scheduler.claim", "claimed")
        flight = _InFlight(
            claimed=claimed, delivery=delivery, output=LiveOutput(claimed.conceal_text)
        )
        self._in_flight[message.run_id] = flight
        try:
            with (
                self._secret_scope.hide(list(claimed.secret_env.values())),
                self._tracer.span(
                    "run.execute", attributes={"scheduler.executor": claimed.executor}
                ) as execution,
            ):
                result = await self._execute(flight)
                if result is None:
                    execution.set_attribute("scheduler.run.status", "stopped")
                else:
                    execution.set_attribute("scheduler.run.status", result.status)
                    if result.status != "succeeded":
                        # The status only: the error text may hold what redaction removes.
                        execution.set_error(result.status)
                    await self._report(flight, result)
        finally:
            self._in_flight.pop(message.run_id, None)
            await self._settle_delivery(delivery)

    async def _execute(self, flight: _InFlight) -> ExecutionResult | None:
        claimed = flight.claimed
        try:
            executor: Executor = self._executors.get(claimed.executor)
        except UnknownExecutorError as error:
            return ExecutionResult(status="failed", error=str(error))
        if claimed.secret_error is not None:
            return ExecutionResult(status="failed", error=claimed.secret_error)
        # The executor runs in the handler's own task (one task per run, not two); a stop
        # cancels the handler while the executor runs, and is taken back here.
        task = flight.task = asyncio.current_task()
        try:
            context = claimed.context()
            if self._options.live_output_interval is not None:
                context = replace(context, on_output=flight.output.write)
            return await run_executor(
                executor, context, grace_seconds=self._options.executor_grace_seconds
            )
        except asyncio.CancelledError:
            if flight.stop_requested and task is not None and task.uncancel() == 0:
                return None
            raise
        finally:
            flight.task = None

    async def _report(self, flight: _InFlight, result: ExecutionResult) -> None:
        run_id = flight.claimed.run.id
        result = flight.claimed.conceal(result)
        outcome = Outcome(
            run_id=run_id,
            token=flight.claimed.token,
            result=result,
            run=flight.claimed.run,
            task=flight.claimed.task,
        )

        async def complete() -> None:
            await self._outcomes.submit(outcome)

        try:
            await retry_until(complete, what=f"record the outcome of run {run_id}")
        except (Conflict, NotFound) as error:
            logger.warning("outcome of run %s refused: %s", run_id, error)
            return
        self.stats.completed += 1
        self.stats.by_status[result.status] = self.stats.by_status.get(result.status, 0) + 1

    async def _claim_batch(self, deliveries: list[Delivery]) -> list[ClaimedRun | None]:
        """Claim the runs of every delivery waiting; a run delivered twice in one batch goes
        to the first of its deliveries, the other is a duplicate."""
        assert self.worker is not None
        claimed = await self._execution.claim_many(
            [delivery.message.run_id for delivery in deliveries], worker_id=self.worker.id
        )
        return [claimed.pop(delivery.message.run_id, None) for delivery in deliveries]

    async def _complete_batch(self, outcomes: list[Outcome]) -> list[OutcomeAnswer]:
        async with self._run_writes:
            return await self._execution.complete_many(outcomes)

    async def _settle_delivery(self, delivery: Delivery, *, requeue: bool = False) -> None:
        try:
            if requeue:
                await self._queue.nack(delivery, requeue=True)
            else:
                await self._queue.ack(delivery)
        except Exception:
            # The broker will deliver it again; the claim makes that harmless.
            logger.warning("could not settle delivery of run %s", delivery.message.run_id)


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel a consumer and wait for it to close (which hands its unacked deliveries back)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
