"""The worker protocol's trust rules, on fakes: a heartbeat never renews another worker's lease,
a worker id speaks only for the credential that registered it, and what an HTTP worker reports
is capped like in-process output."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from application_fixtures import ALICE, task_spec

from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import NotFound
from scheduler_application.execution.output_caps import cap_text
from scheduler_application.execution.remote_workers import RemoteWorkerService
from scheduler_application.execution.service import ActiveRun, ClaimedRun, ExecutionService
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import FakeClock, InMemoryStore, InMemoryUnitOfWorkFactory
from scheduler_domain.accounts import Role
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker

FLEET_KEY = Principal("fleet-owner", Role.WORKER, via="api_key", key_id="key-1")
#: Another key of the same owner: another credential.
SIBLING_KEY = Principal("fleet-owner", Role.WORKER, via="api_key", key_id="key-2")
ADMIN = Principal("root", Role.ADMIN)
LEASE = timedelta(seconds=30)


def registration(name: str = "remote") -> RegisterWorker:
    return RegisterWorker(name=name, hostname="h", pid=1, queues=("default",), capacity=2)


@pytest.fixture
def remote(
    uow_factory: InMemoryUnitOfWorkFactory,
    execution: ExecutionService,
    workers: WorkerService,
) -> RemoteWorkerService:
    return RemoteWorkerService(
        uow_factory=uow_factory,
        execution=execution,
        workers=workers,
        poll_interval=timedelta(milliseconds=10),
        output_limit_bytes=100,
        error_limit_bytes=40,
    )


@pytest.fixture
async def task(tasks: TaskService) -> Task:
    return await tasks.create(task_spec(), principal=ALICE)


async def claimed_by(
    runs: RunService, relay: RunRelay, execution: ExecutionService, task: Task, worker_id: str
) -> ClaimedRun:
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    claim = await execution.claim(run.id, worker_id=worker_id)
    assert claim is not None
    return claim


# -- heartbeats ----------------------------------------------------------------------------------


async def test_a_heartbeat_never_renews_a_run_another_worker_holds(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    workers: WorkerService,
    task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    intruder = await workers.register(registration("intruder"))
    claim = await claimed_by(runs, relay, execution, task, worker.id)
    expires = store.row("runs", claim.run.id).lease_expires_at
    clock.advance(seconds=20)

    reply = await execution.heartbeat(
        intruder.id, [ActiveRun(run_id=claim.run.id, token=claim.token)]
    )

    assert reply.stop == [claim.run.id]
    assert store.row("runs", claim.run.id).lease_expires_at == expires
    assert store.row("workers", intruder.id).active_runs == 0
    own = await execution.heartbeat(worker.id, [ActiveRun(run_id=claim.run.id, token=claim.token)])
    assert own.stop == []
    assert store.row("runs", claim.run.id).lease_expires_at == clock.now() + LEASE


# -- a worker id belongs to its credential --------------------------------------------------------


async def test_registration_binds_the_worker_to_the_credential(
    remote: RemoteWorkerService, store: InMemoryStore
) -> None:
    by_key = await remote.register(registration(), principal=FLEET_KEY)
    by_user = await remote.register(registration(), principal=ADMIN)

    assert store.row("workers", by_key.id).principal_id == "api_key:key-1"
    assert store.row("workers", by_user.id).principal_id == "user:root"


@pytest.mark.parametrize("stranger", [SIBLING_KEY, ADMIN])
async def test_another_credential_cannot_speak_for_the_worker(
    remote: RemoteWorkerService,
    runs: RunService,
    relay: RunRelay,
    task: Task,
    store: InMemoryStore,
    stranger: Principal,
) -> None:
    worker = await remote.register(registration(), principal=FLEET_KEY)
    await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    claim = await remote.claim(worker.id, principal=FLEET_KEY)
    assert claim is not None
    held = [ActiveRun(run_id=claim.run.id, token=claim.token)]
    done = ExecutionResult(status="succeeded")

    attempts: dict[str, Callable[[], Awaitable[object]]] = {
        "claim": lambda: remote.claim(worker.id, principal=stranger),
        "heartbeat": lambda: remote.heartbeat(worker.id, held, principal=stranger),
        "complete": lambda: remote.complete(
            claim.run.id, worker_id=worker.id, token=claim.token, result=done, principal=stranger
        ),
        "release": lambda: remote.release(
            claim.run.id, worker_id=worker.id, token=claim.token, principal=stranger
        ),
        "deregister": lambda: remote.deregister(worker.id, principal=stranger),
    }
    for name, attempt in attempts.items():
        with pytest.raises(NotFound) as refused:
            await attempt()
        assert refused.value.message == f"worker {worker.id} is not registered", name

    assert store.row("runs", claim.run.id).status.value == "running"
    assert store.row("workers", worker.id).status.value == "online"
    settled = await remote.complete(
        claim.run.id, worker_id=worker.id, token=claim.token, result=done, principal=FLEET_KEY
    )
    assert settled.run.status.value == "succeeded"


async def test_an_in_process_worker_cannot_be_spoken_for_over_http(
    remote: RemoteWorkerService, execution: ExecutionService, worker: Worker
) -> None:
    with pytest.raises(NotFound):
        await remote.heartbeat(worker.id, [], principal=ADMIN)
    with pytest.raises(NotFound):
        await remote.claim(worker.id, principal=FLEET_KEY)
    assert (await execution.heartbeat(worker.id, [])).stop == []  # in-process: unchanged


# -- caps ----------------------------------------------------------------------------------------


async def test_an_http_workers_output_and_error_are_capped(
    remote: RemoteWorkerService, runs: RunService, relay: RunRelay, task: Task
) -> None:
    worker = await remote.register(registration(), principal=FLEET_KEY)
    await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    claim = await remote.claim(worker.id, principal=FLEET_KEY)
    assert claim is not None

    settled = await remote.complete(
        claim.run.id,
        worker_id=worker.id,
        token=claim.token,
        result=ExecutionResult(status="failed", output="x" * 900_000, error="e" * 10_000),
        principal=FLEET_KEY,
    )

    assert settled.run.output == "x" * 100 + "\n[output truncated: 899900 bytes dropped]"
    assert settled.run.error == "e" * 40 + "\n[error truncated: 9960 bytes dropped]"


def test_cap_text_keeps_short_text_and_never_splits_a_character() -> None:
    assert cap_text(None, 10) is None
    assert cap_text("short", 10) == "short"
    assert cap_text("ab€", 4) == "ab\n[output truncated: 3 bytes dropped]"  # € is 3 bytes
    assert cap_text("abc", 0) == "\n[output truncated: 3 bytes dropped]"
