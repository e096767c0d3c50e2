"""The worker runtime and the dispatcher's loops together, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from execution_stack import OWNER, PYTHON, Stack, running

from scheduler_domain.status import RunStatus
from scheduler_domain.worker import WorkerStatus

pytestmark = pytest.mark.timeout(60)


async def test_triggered_run_executes_once_with_a_complete_history(stack: Stack) -> None:
    task_id = await stack.create_task(
        name="echo", executor="shell", params={"argv": ["echo", "hello; $(id)"]}
    )
    async with running(stack.worker()) as worker:
        run = await stack.trigger(task_id)

        async def finished() -> bool:
            return (await stack.runs.get(run.id, principal=OWNER)).status.is_final

        await stack.wait_for(finished)
    done = await stack.runs.get(run.id, principal=OWNER)
    assert done.status is RunStatus.SUCCEEDED
    assert done.output == "hello; $(id)\n"
    assert done.result == {"exit_code": 0}
    assert done.worker_id == worker.worker.id  # type: ignore[union-attr]
    events = await stack.runs.events(run.id, principal=OWNER)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, RunStatus.PENDING),
        (RunStatus.PENDING, RunStatus.QUEUED),
        (RunStatus.QUEUED, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.SUCCEEDED),
    ]
    assert worker.stats.claimed == 1
    assert worker.stats.completed == 1


async def test_failing_run_is_retried_then_dead_lettered(stack: Stack) -> None:
    task_id = await stack.create_task(
        name="always-fails",
        executor="shell",
        params={"argv": [PYTHON, "-c", "import sys; print('bad'); sys.exit(3)"]},
        retry={"max_attempts": 3, "base_delay_seconds": 0.1, "max_delay_seconds": 0.2},
    )
    async with running(stack.worker()):
        await stack.trigger(task_id)

        async def three_attempts_settled() -> bool:
            runs = await stack.runs_of(task_id)
            return len(runs) == 3 and all(r.status.is_final for r in runs)

        await stack.wait_for(three_attempts_settled)
    runs = await stack.runs_of(task_id)
    assert [r.attempt for r in runs] == [1, 2, 3]
    assert [r.status for r in runs] == [RunStatus.FAILED, RunStatus.FAILED, RunStatus.DEAD_LETTERED]
    assert runs[1].retry_of == runs[0].id
    assert runs[2].retry_of == runs[1].id
    assert all(r.error == "exit code 3" for r in runs)
    assert runs[1].not_before is not None
    assert runs[1].not_before >= runs[0].finished_at


async def test_timeout_kills_the_run_and_records_timed_out(stack: Stack) -> None:
    task_id = await stack.create_task(
        name="slow", executor="shell", params={"argv": ["sleep", "30"]}, timeout_seconds=1
    )
    async with running(stack.worker()):
        run = await stack.trigger(task_id)

        async def settled() -> bool:
            return (await stack.runs.get(run.id, principal=OWNER)).status.is_final

        await stack.wait_for(settled)
    done = await stack.runs.get(run.id, principal=OWNER)
    assert done.status in (RunStatus.TIMED_OUT, RunStatus.DEAD_LETTERED)
    events = await stack.runs.events(run.id, principal=OWNER)
    assert RunStatus.TIMED_OUT in [e.to_status for e in events]


async def test_cancelling_a_running_run_stops_it_on_the_worker(stack: Stack) -> None:
    task_id = await stack.create_task(
        name="long", executor="shell", params={"argv": ["sleep", "30"]}
    )
    async with running(stack.worker()) as worker:
        run = await stack.trigger(task_id)

        async def started() -> bool:
            return (await stack.runs.get(run.id, principal=OWNER)).status is RunStatus.RUNNING

        await stack.wait_for(started)
        await stack.runs.cancel(run.id, principal=OWNER)

        async def stopped() -> bool:
            return worker.active_runs == 0

        await stack.wait_for(stopped, timeout=10)
        assert worker.stats.stopped == 1
    done = await stack.runs.get(run.id, principal=OWNER)
    assert done.status is RunStatus.CANCELLED
    assert worker.stats.completed == 0


async def test_drain_finishes_short_runs_and_releases_the_rest(
    stack: Stack, shared_tmp: Path
) -> None:
    # The quick run lasts until the drain has begun (not a fixed time, which a slow start of
    # the other run could outlast before both were ever running).
    go = shared_tmp / "go"
    quick = await stack.create_task(
        name="quick",
        executor="shell",
        params={"argv": ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done"]},
    )
    stuck = await stack.create_task(
        name="stuck",
        executor="shell",
        params={"argv": ["sleep", "60"]},
        retry={"max_attempts": 2, "base_delay_seconds": 30},
    )
    worker = stack.worker(drain_timeout=timedelta(seconds=1.5))
    async with running(worker):
        quick_run = await stack.trigger(quick)
        stuck_run = await stack.trigger(stuck)

        async def both_running() -> bool:
            statuses = {
                (await stack.runs.get(r.id, principal=OWNER)).status for r in (quick_run, stuck_run)
            }
            return statuses == {RunStatus.RUNNING}

        await stack.wait_for(both_running)
        worker.stop()  # the drain: it waits up to 1.5 s for both runs
        go.touch()
    # The drain let the quick run finish and released the stuck one.
    assert (await stack.runs.get(quick_run.id, principal=OWNER)).status is RunStatus.SUCCEEDED
    runs = await stack.runs_of(stuck)
    assert runs[0].status is RunStatus.LOST
    assert runs[1].status in (RunStatus.PENDING, RunStatus.QUEUED)
    assert runs[1].attempt == 2
    # Released work is retried at once, not after the task's 30 s backoff.
    assert runs[1].not_before is not None
    assert runs[1].not_before <= runs[0].finished_at + timedelta(seconds=1)  # type: ignore[operator]
    assert worker.stats.released == 1
    registered = await stack.execution._uow_factory().__aenter__()
    try:
        row = await registered.workers.get(worker.worker.id)  # type: ignore[union-attr]
    finally:
        await registered.__aexit__(None, None, None)
    assert row is not None
    assert row.status is WorkerStatus.OFFLINE


async def test_duplicate_delivery_is_acked_and_dropped(stack: Stack) -> None:
    task_id = await stack.create_task(name="once", executor="noop")
    async with running(stack.worker()) as worker:
        run = await stack.trigger(task_id)

        async def done() -> bool:
            return (await stack.runs.get(run.id, principal=OWNER)).status is RunStatus.SUCCEEDED

        await stack.wait_for(done)
        from scheduler_application.dispatch.publishing import run_message

        finished = await stack.runs.get(run.id, principal=OWNER)
        finished.queued_at = finished.queued_at or finished.created_at
        await stack.queue.publish(run_message(finished))

        async def dropped() -> bool:
            return worker.stats.duplicates == 1

        await stack.wait_for(dropped, timeout=10)
    assert worker.stats.completed == 1
    assert await stack.queue.depth("default") == 0
