"""An operator's drain pauses a real worker runtime (it finishes what it holds, stays
registered and heartbeating, takes nothing new) and undrain resumes it; on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from execution_stack import OWNER, PYTHON, Stack, running

from scheduler_application.accounts.access import Principal
from scheduler_application.execution.workers import WorkerService
from scheduler_domain.accounts import Role
from scheduler_domain.status import RunStatus
from scheduler_domain.worker import Worker, WorkerStatus

pytestmark = pytest.mark.timeout(60)

OPERATOR = Principal(subject_id="operator-1", role=Role.OPERATOR)


async def test_a_drained_worker_takes_no_new_run_and_takes_one_after_undrain(
    stack: Stack,
) -> None:
    registry = WorkerService(uow_factory=stack.uow_factory, clock=stack.clock)
    slow = await stack.create_task(
        name="slow",
        executor="shell",
        params={"argv": [PYTHON, "-c", "import time; time.sleep(1.0)"]},
    )
    quick = await stack.create_task(name="quick", executor="noop")
    runtime = stack.worker()
    async with running(runtime) as worker:
        me = worker.worker
        assert me is not None
        in_hand = await stack.trigger(slow)
        await stack.wait_for(lambda: _status_is(stack, in_hand.id, RunStatus.RUNNING))

        await registry.drain(me.id, principal=OPERATOR)
        await stack.wait_for(lambda: _true(not runtime.consuming))
        # The run in hand is finished, not abandoned.
        await stack.wait_for(lambda: _status_is(stack, in_hand.id, RunStatus.SUCCEEDED))

        waiting = await stack.trigger(quick)
        await stack.wait_for(lambda: _status_is(stack, waiting.id, RunStatus.QUEUED))
        # Two heartbeats later the worker is still registered, draining, alive — and the run
        # still waits for it.
        seen = (await registry.get(me.id, principal=OPERATOR)).heartbeat_at
        await stack.wait_for(lambda: _heartbeats_after(registry, me, seen, 2))
        row = await registry.get(me.id, principal=OPERATOR)
        assert row.status is WorkerStatus.DRAINING
        assert (await stack.runs.get(waiting.id, principal=OWNER)).status is RunStatus.QUEUED
        assert runtime.stats.claimed == 1

        undrained = await registry.undrain(me.id, principal=OPERATOR)
        assert undrained.status is WorkerStatus.ONLINE
        await stack.wait_for(lambda: _status_is(stack, waiting.id, RunStatus.SUCCEEDED))
        done = await stack.runs.get(waiting.id, principal=OWNER)
        assert done.worker_id == me.id
        assert runtime.consuming
    # stop() still drains and deregisters.
    assert (await registry.get(me.id, principal=OPERATOR)).status is WorkerStatus.OFFLINE


async def _status_is(stack: Stack, run_id: str, status: RunStatus) -> bool:
    return (await stack.runs.get(run_id, principal=OWNER)).status is status


async def _true(value: bool) -> bool:
    await asyncio.sleep(0)
    return value


_beats: dict[str, list[datetime]] = {}


async def _heartbeats_after(
    registry: WorkerService, worker: Worker, since: datetime, count: int
) -> bool:
    at = (await registry.get(worker.id, principal=OPERATOR)).heartbeat_at
    seen = _beats.setdefault(worker.id, [])
    if at > since and at not in seen:
        seen.append(at)
    return len(seen) >= count


async def test_a_worker_retired_while_cut_off_stops_instead_of_working_unseen(
    stack: Stack,
) -> None:
    runtime = stack.worker()
    running = asyncio.create_task(runtime.run())
    me = await asyncio.wait_for(runtime.wait_started(), timeout=10)
    # As the retention would after a long partition: offline, then deleted.
    async with stack.uow_factory() as uow:
        row = await uow.workers.get(me.id)
        assert row is not None
        row.go_offline(now=row.heartbeat_at)
        await uow.workers.update(row)
        assert await uow.workers.delete_offline(me.id, before=row.heartbeat_at + timedelta(days=1))
        await uow.commit()

    await asyncio.wait_for(running, timeout=20)  # returns, no error

    assert not runtime.consuming
