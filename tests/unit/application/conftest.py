from __future__ import annotations

import random

import pytest
from application_fixtures import ALICE, START, task_spec

from pending_runs import PendingRuns
from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.execution.reaper import LeaseReaper
from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def uow_factory(store: InMemoryStore) -> InMemoryUnitOfWorkFactory:
    return InMemoryUnitOfWorkFactory(store)


@pytest.fixture
def queue() -> InMemoryRunQueue:
    return InMemoryRunQueue()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(7)


@pytest.fixture
def tasks(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> TaskService:
    return TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)


@pytest.fixture
def runs(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, relay: RunRelay) -> RunService:
    return RunService(uow_factory=uow_factory, clock=clock, relay=relay)


@pytest.fixture
def pending(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> PendingRuns:
    return PendingRuns(uow_factory=uow_factory, clock=clock)


@pytest.fixture
def execution(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, rng: random.Random
) -> ExecutionService:
    return ExecutionService(
        uow_factory=uow_factory, clock=clock, rng=rng, executor_policy=OPEN_EXECUTOR_POLICY
    )


@pytest.fixture
def relay(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, queue: InMemoryRunQueue
) -> RunRelay:
    return RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)


@pytest.fixture
def reaper(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, rng: random.Random
) -> LeaseReaper:
    return LeaseReaper(uow_factory=uow_factory, clock=clock, rng=rng)


@pytest.fixture
def workers(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, rng: random.Random
) -> WorkerService:
    return WorkerService(uow_factory=uow_factory, clock=clock, rng=rng)


@pytest.fixture
async def worker(workers: WorkerService) -> Worker:
    return await workers.register(
        RegisterWorker(name="w-1", hostname="host-a", pid=100, queues=("default",), capacity=4)
    )


@pytest.fixture
async def alice_task(tasks: TaskService) -> Task:
    return await tasks.create(task_spec(), principal=ALICE)
