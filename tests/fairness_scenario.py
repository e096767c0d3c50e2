"""User A enqueues a backlog, then user B a few runs: how long B's runs wait to start, under a
queue's ``fifo`` or ``fair`` policy. Shared by the fairness integration test and
``scripts/bench_fairness.py``.

In process, on a real database: triggers go through the batch endpoint's use case (the gates
admit a run at once when they may: under ``fifo`` all of A's backlog is queued at once, under
``fair`` at most ``fair_in_flight`` of it); a relay loop releases the rest every
``relay_interval``; ``slots`` workers take the runs' messages from the queue (the
order of a broker: the order published, within priority), "run" it for ``run_seconds`` and
report it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.execution.service import ExecutionService
from scheduler_application.operations.queue_control import QueueChanges, QueueControl
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.batch_trigger import BatchTrigger, TriggerItem
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_domain.accounts import Role
from scheduler_domain.queue_settings import Fairness
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.tables import task_runs
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.memory import MemoryRunQueue

USER_A = Principal(subject_id="user-a", role=Role.USER)
USER_B = Principal(subject_id="user-b", role=Role.USER)
OPERATOR = Principal(subject_id="operator", role=Role.OPERATOR)
QUEUE = "shared"


@dataclass(frozen=True, slots=True)
class FairnessResult:
    policy: str
    a_runs: int
    b_runs: int
    #: B's runs: ``started_at - created_at``, seconds.
    b_delays: list[float]
    #: A's runs started before B's last one started.
    a_started_before_b: int
    #: Runs finished per second while both were busy (A's and B's together).
    throughput: float

    @property
    def p50(self) -> float:
        return statistics.median(self.b_delays)

    @property
    def worst(self) -> float:
        return max(self.b_delays)


async def run_scenario(
    uow_factory: SqlUnitOfWorkFactory,
    *,
    policy: Fairness,
    a_runs: int,
    b_runs: int,
    slots: int = 8,
    run_seconds: float = 0.005,
    fair_in_flight: int = 10,
    relay_interval: float = 0.05,
    timeout: float = 600.0,
) -> FairnessResult:
    clock = SystemClock()
    await QueueControl(uow_factory=uow_factory, clock=clock).update(
        QUEUE,
        QueueChanges(fairness=policy, fair_in_flight=fair_in_flight),
        principal=OPERATOR,
    )
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    a = await tasks.create({"name": "a", "executor": "noop", "queue": QUEUE}, principal=USER_A)
    b = await tasks.create({"name": "b", "executor": "noop", "queue": QUEUE}, principal=USER_B)
    queue = MemoryRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
    batch = BatchTrigger(uow_factory=uow_factory, clock=clock, relay=relay)
    execution = ExecutionService(uow_factory=uow_factory, clock=clock)
    stop = asyncio.Event()

    async def relay_loop() -> None:
        while not stop.is_set():
            await relay.relay_pending(limit=500)
            await asyncio.sleep(relay_interval)

    async def worker(index: int) -> None:
        done = ExecutionResult(status="succeeded")
        async with queue.consume([QUEUE], prefetch=1) as consumer:
            async for delivery in consumer:
                claimed = await execution.claim(delivery.message.run_id, worker_id=f"w{index}")
                if claimed is not None:
                    await asyncio.sleep(run_seconds)
                    await execution.complete(claimed.run.id, claimed.run.version, done)
                await queue.ack(delivery)

    base = clock.now()
    for start in range(0, a_runs, 1000):
        # Distinct logical times: a batch of one task's triggers at one instant would make
        # the use case look for a free one per item.
        items = [
            TriggerItem(task_id=a.id, logical_time=base + timedelta(microseconds=start + i))
            for i in range(min(1000, a_runs - start))
        ]
        await batch.trigger(items, principal=USER_A)
    jobs = [asyncio.create_task(relay_loop())]
    jobs += [asyncio.create_task(worker(i)) for i in range(slots)]
    began = time.monotonic()
    try:
        await asyncio.sleep(0.2)  # A's backlog is being worked on when B comes
        outcomes = await batch.trigger(
            [TriggerItem(task_id=b.id) for _ in range(b_runs)], principal=USER_B
        )
        b_ids = {o.run.id for o in outcomes if o.run is not None}
        while True:
            async with uow_factory() as uow:
                b_started = [r for r in await uow.runs.get_many(sorted(b_ids)) if r.started_at]
            if len(b_started) == len(b_ids):
                break
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"B's runs did not all start within {timeout} s")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        for job in jobs[1:]:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await relay.aclose()
    elapsed = time.monotonic() - began
    last_b = max(r.started_at for r in b_started if r.started_at is not None)
    a_started = await _started_before(uow_factory, a.id, last_b)
    delays = sorted(
        (r.started_at - r.created_at).total_seconds() for r in b_started if r.started_at
    )
    return FairnessResult(
        policy=policy.value,
        a_runs=a_runs,
        b_runs=b_runs,
        b_delays=delays,
        a_started_before_b=a_started,
        throughput=(a_started + len(b_started)) / max(elapsed, 1e-9),
    )


async def _started_before(
    uow_factory: SqlUnitOfWorkFactory, task_id: str, instant: datetime
) -> int:
    async with uow_factory() as uow:
        query = select(func.count()).where(
            task_runs.c.task_id == task_id, task_runs.c.started_at <= instant
        )
        return int((await uow.connection.execute(query)).scalar() or 0)
