"""Remote workers, queue overviews, the dependency view and user administration, on fakes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from recording_queue import InMemoryRunQueue
from scheduler_application.accounts.access import SYSTEM, Principal
from scheduler_application.accounts.user_admin import UserAdminService
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict, NotFound, PermissionDenied
from scheduler_application.execution.remote_workers import RemoteWorkerService
from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.operations.status_report import StatusService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.graph import TaskGraphService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError

ALICE = Principal("alice", Role.USER)
BOB = Principal("bob", Role.USER)
WORKER = Principal("fleet", Role.WORKER, via="api_key")
ADMIN = Principal("root", Role.ADMIN)


@pytest.fixture
def remote(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> RemoteWorkerService:
    return RemoteWorkerService(
        uow_factory=uow_factory,
        execution=ExecutionService(
            uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
        ),
        workers=WorkerService(uow_factory=uow_factory, clock=clock),
        poll_interval=timedelta(milliseconds=10),
    )


async def queued_run(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> str:
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    task = await tasks.create({"name": "t", "executor": "noop"}, principal=ALICE)
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=InMemoryRunQueue())
    runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
    run = await runs.trigger(task.id, principal=ALICE)
    return run.id


async def test_remote_claim_waits_for_work_and_completes_it(
    remote: RemoteWorkerService, uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    worker = await remote.register(
        RegisterWorker(name="w", hostname="h", pid=1, queues=("default",), capacity=1),
        principal=WORKER,
    )
    assert await remote.claim(worker.id, principal=WORKER) is None

    waiting = asyncio.create_task(
        remote.claim(worker.id, principal=WORKER, wait=timedelta(seconds=2))
    )
    await asyncio.sleep(0.05)
    run_id = await queued_run(uow_factory, clock)
    claimed = await waiting

    assert claimed is not None
    assert claimed.run.id == run_id
    sibling = await remote.register(
        RegisterWorker(name="w2", hostname="h", pid=2, queues=("default",), capacity=1),
        principal=WORKER,
    )
    with pytest.raises(Conflict):
        await remote.complete(
            run_id,
            worker_id=sibling.id,
            token=claimed.token,
            result=ExecutionResult(status="succeeded"),
            principal=WORKER,
        )
    settled = await remote.complete(
        run_id,
        worker_id=worker.id,
        token=claimed.token,
        result=ExecutionResult(status="succeeded"),
        principal=WORKER,
    )
    assert settled.run.status.value == "succeeded"


async def test_only_workers_and_admins_use_the_protocol(remote: RemoteWorkerService) -> None:
    command = RegisterWorker(name="w", hostname="h", pid=1, queues=("q",), capacity=1)

    with pytest.raises(PermissionDenied):
        await remote.register(command, principal=ALICE)
    assert await remote.register(command, principal=ADMIN)


async def test_claim_wait_is_bounded_and_workers_must_exist(remote: RemoteWorkerService) -> None:
    with pytest.raises(ValidationError):
        await remote.claim("w", principal=WORKER, wait=timedelta(minutes=5))
    with pytest.raises(NotFound):
        await remote.claim("nobody", principal=WORKER)


class SilentQueue(InMemoryRunQueue):
    async def depth(self, queue: str) -> int:
        raise ConnectionError("broker down")


async def test_queue_overview_survives_a_silent_broker(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    await queued_run(uow_factory, clock)
    status = StatusService(uow_factory=uow_factory, clock=clock, queue=SilentQueue())

    (stats,) = await status.queues(principal=ALICE)

    assert stats.name == "default"
    assert stats.depth is None
    assert stats.activity.queued == 1
    assert stats.activity.created == 1
    assert await status.counts(principal=ALICE) is None
    assert (await status.counts(principal=ADMIN)) is not None


async def test_dependency_view_hides_other_owners_tasks(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    upstream = await tasks.create({"name": "up", "executor": "noop"}, principal=ALICE)
    mine = await tasks.create(
        {"name": "mine", "executor": "noop", "depends_on": [upstream.id]}, principal=ALICE
    )
    operator = Principal("olga", Role.OPERATOR)
    await tasks.create(
        {"name": "theirs", "executor": "noop", "depends_on": [upstream.id]}, principal=operator
    )
    graph = TaskGraphService(uow_factory=uow_factory)

    view = await graph.dependencies(upstream.id, principal=ALICE)

    assert [t.id for t in view.dependents] == [mine.id]
    assert view.hidden_dependents == 1
    with pytest.raises(NotFound):
        await graph.dependencies(upstream.id, principal=BOB)


async def test_admins_cannot_lock_themselves_out(users: UserAdminService) -> None:
    root = await users.create("root", "a long enough password", Role.ADMIN, principal=SYSTEM)
    me = Principal(root.id, Role.ADMIN)

    with pytest.raises(ValidationError):
        await users.update(root.id, principal=me, role=Role.USER)
    with pytest.raises(ValidationError):
        await users.update(root.id, principal=me, disabled=True)
    assert (await users.update(root.id, principal=me, role=Role.ADMIN)).role is Role.ADMIN
