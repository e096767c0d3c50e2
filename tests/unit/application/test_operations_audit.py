"""Operators' actions on queues and workers are audited in the event log, in the transaction
of the change: pause, resume, limits, purge; drain and undrain."""

from __future__ import annotations

import pytest
from application_fixtures import OPERATOR

from scheduler_application.events.log import EventService
from scheduler_application.execution.workers import WorkerService
from scheduler_application.operations.queue_control import QueueChanges, QueueControl
from scheduler_application.testing import FakeClock, InMemoryUnitOfWorkFactory
from scheduler_domain.events import LOG_START
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.worker import Worker

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def events(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> EventService:
    return EventService(uow_factory=uow_factory, clock=clock)


async def test_queue_changes_are_events_naming_the_queue_and_who(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, events: EventService
) -> None:
    control = QueueControl(uow_factory=uow_factory, clock=clock)
    await control.pause("reports", principal=OPERATOR)
    await control.resume("reports", principal=OPERATOR)
    await control.update(
        "reports", QueueChanges(rate_limit=RateLimit.parse("10/s")), principal=OPERATOR
    )
    await control.purge("reports", principal=OPERATOR)
    logged = await events.read(principal=OPERATOR, after=LOG_START)
    audit = [(e.kind, e.subject, e.actor) for e in logged if e.kind.startswith("queue.")]
    assert audit == [
        ("queue.paused", "reports", OPERATOR.actor),
        ("queue.resumed", "reports", OPERATOR.actor),
        ("queue.updated", "reports", OPERATOR.actor),
        ("queue.purged", "reports", OPERATOR.actor),
    ]
    updated = next(e for e in logged if e.kind == "queue.updated")
    assert updated.detail == {"rate_limit": "10/s"}
    purged = next(e for e in logged if e.kind == "queue.purged")
    assert purged.detail == {"cancelled": 0}


async def test_drain_and_undrain_are_events(
    workers: WorkerService, worker: Worker, events: EventService
) -> None:
    await workers.drain(worker.id, principal=OPERATOR)
    await workers.undrain(worker.id, principal=OPERATOR)
    logged = await events.read(principal=OPERATOR, after=LOG_START)
    audit = [(e.kind, e.subject) for e in logged if e.kind.startswith("worker.")]
    assert audit == [("worker.drained", worker.id), ("worker.undrained", worker.id)]
