from __future__ import annotations

from datetime import timedelta

import pytest
from application_fixtures import ALICE, OPERATOR, VIEWER_ALICE, WORKER_ROLE, task_spec

from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import NotFound, PermissionDenied
from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import WorkerService
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import FakeClock, InMemoryStore
from scheduler_domain.errors import ValidationError
from scheduler_domain.status import RunStatus
from scheduler_domain.worker import Worker, WorkerStatus


async def test_register_stores_an_online_worker(
    worker: Worker, store: InMemoryStore, clock: FakeClock
) -> None:
    stored = store.row("workers", worker.id)
    assert (stored.status, stored.queues, stored.capacity) == (
        WorkerStatus.ONLINE,
        ("default",),
        4,
    )
    assert stored.started_at == stored.heartbeat_at == clock.now()


async def test_register_refuses_a_worker_without_queues(workers: WorkerService) -> None:
    from scheduler_application.execution.workers import RegisterWorker

    with pytest.raises(ValidationError) as error:
        await workers.register(RegisterWorker(name="w", hostname="h", pid=1, queues=(), capacity=1))
    assert error.value.field == "queues"


async def test_drain_is_seen_by_the_worker_on_its_next_heartbeat(
    workers: WorkerService, execution: ExecutionService, worker: Worker
) -> None:
    drained = await workers.drain(worker.id, principal=OPERATOR)
    assert drained.status is WorkerStatus.DRAINING
    reply = await execution.heartbeat(worker.id, [])
    assert reply.status is WorkerStatus.DRAINING


async def test_only_operators_drain_workers(workers: WorkerService, worker: Worker) -> None:
    for principal in (ALICE, VIEWER_ALICE, WORKER_ROLE):
        with pytest.raises(PermissionDenied):
            await workers.drain(worker.id, principal=principal)
    with pytest.raises(NotFound):
        await workers.drain("nope", principal=OPERATOR)


async def test_deregister_takes_the_worker_offline_and_retries_its_runs_at_once(
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    workers: WorkerService,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    task = await tasks.create(task_spec(retry={"max_attempts": 2}), principal=ALICE)
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    await execution.claim(run.id, worker_id=worker.id)
    gone = await workers.deregister(worker.id)
    assert gone.status is WorkerStatus.OFFLINE
    assert store.row("runs", run.id).status is RunStatus.LOST
    [retry] = [r for r in store.rows("runs") if r.retry_of == run.id]
    assert retry.not_before == clock.now()


async def test_silent_workers_are_marked_offline(
    workers: WorkerService, execution: ExecutionService, worker: Worker, clock: FakeClock
) -> None:
    clock.advance(seconds=20)
    assert await workers.mark_silent_offline(timedelta(seconds=30)) == []
    clock.advance(seconds=11)
    [gone] = await workers.mark_silent_offline(timedelta(seconds=30))
    assert gone.id == worker.id
    assert gone.status is WorkerStatus.OFFLINE
    reply = await execution.heartbeat(worker.id, [("x", 1)])  # plain pairs work too
    assert reply.status is WorkerStatus.ONLINE
    assert reply.stop == ["x"]


async def test_list_and_get_workers(workers: WorkerService, worker: Worker) -> None:
    assert [w.id for w in await workers.list(principal=OPERATOR)] == [worker.id]
    assert await workers.list(principal=OPERATOR, status=WorkerStatus.DRAINING) == []
    assert (await workers.get(worker.id, principal=ALICE)).name == "w-1"
    with pytest.raises(PermissionDenied):
        await workers.list(principal=WORKER_ROLE)
