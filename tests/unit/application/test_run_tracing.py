"""One trace per run: where the use cases open spans and which traceparent each run and each
message carries (with the recording tracer)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from application_fixtures import ALICE, START, task_spec

from recording_queue import InMemoryRunQueue, InMemoryTransactionalRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.execution.service import ExecutionService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.ports.tracing import NO_TRACER, SpanKind
from scheduler_application.runs.dependencies import DependencyResolver
from scheduler_application.runs.scheduling import ScheduleFiring
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
    RecordingTracer,
)
from scheduler_application.testing.tracing import parse_traceparent
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def tracer() -> RecordingTracer:
    return RecordingTracer()


@pytest.fixture
def relay(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
    tracer: RecordingTracer,
) -> RunRelay:
    return RunRelay(uow_factory=uow_factory, clock=clock, queue=queue, tracer=tracer)


@pytest.fixture
def runs(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    tracer: RecordingTracer,
) -> RunService:
    return RunService(uow_factory=uow_factory, clock=clock, relay=relay, tracer=tracer)


async def test_a_trigger_continues_the_callers_trace_through_the_publish(
    runs: RunService,
    tasks: TaskService,
    tracer: RecordingTracer,
    queue: InMemoryRunQueue,
    store: InMemoryStore,
) -> None:
    task = await tasks.create(task_spec("traced"), principal=ALICE)
    with tracer.span("POST /tasks/{id}/trigger") as request:
        run = await runs.trigger(task.id, principal=ALICE)

    [trigger] = tracer.named("run.trigger")
    [publish] = tracer.named("run.publish")
    request_trace, request_span = parse_traceparent(request.traceparent or "")
    assert (trigger.trace_id, trigger.parent_id) == (request_trace, request_span)
    stored: TaskRun = store.row("runs", run.id)
    assert stored.traceparent == trigger.traceparent
    assert (publish.trace_id, publish.parent_id, publish.kind) == (
        request_trace,
        trigger.span_id,
        SpanKind.PRODUCER,
    )
    assert publish.attributes["messaging.destination.name"] == "default"
    assert publish.ended
    # The message carries the publish span, so the consumer's span follows from it.
    [message] = queue.published
    assert message.traceparent == publish.traceparent


async def test_a_message_staged_in_the_transaction_carries_its_publish_span(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    tasks: TaskService,
    tracer: RecordingTracer,
) -> None:
    database_queue = InMemoryTransactionalRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=database_queue, tracer=tracer)
    runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay, tracer=tracer)
    task = await tasks.create(task_spec("staged"), principal=ALICE)

    await runs.trigger(task.id, principal=ALICE)

    [publish] = tracer.named("run.publish")
    [message] = database_queue.published
    assert message.traceparent == publish.traceparent


async def test_fired_and_dependent_runs_each_start_a_trace_of_their_own(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    tasks: TaskService,
    relay: RunRelay,
    tracer: RecordingTracer,
    store: InMemoryStore,
) -> None:
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay, tracer=tracer)
    upstream = await tasks.create(
        task_spec("every-minute", schedule={"interval_seconds": 60}), principal=ALICE
    )
    other = await tasks.create(
        task_spec("other", schedule={"interval_seconds": 60}), principal=ALICE
    )
    clock.advance(seconds=61)
    await firing.fire_due_tasks()

    fired = [r for r in store.rows("runs") if r.trigger is RunTrigger.SCHEDULE]
    assert {r.task_id for r in fired} == {upstream.id, other.id}
    schedule_spans = tracer.named("run.schedule")
    assert len(schedule_spans) == 2
    assert all(span.parent_id is None for span in schedule_spans)
    assert {r.traceparent for r in fired} == {span.traceparent for span in schedule_spans}
    assert len({span.trace_id for span in schedule_spans}) == 2  # a trace per run

    dependent = await tasks.create(task_spec("after", depends_on=[upstream.id]), principal=ALICE)
    [upstream_run] = [r for r in fired if r.task_id == upstream.id]
    upstream_run.status = RunStatus.SUCCEEDED
    upstream_run.finished_at = clock.now()
    store.put("runs", upstream_run)
    resolver = DependencyResolver(uow_factory=uow_factory, clock=clock, relay=relay, tracer=tracer)
    await resolver.resolve_finished()

    [after] = [r for r in store.rows("runs") if r.task_id == dependent.id]
    [dependency_span] = tracer.named("run.dependency")
    assert after.traceparent == dependency_span.traceparent
    assert dependency_span.parent_id is None


async def test_retries_continue_the_trace_of_the_attempt_they_retry(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    runs: RunService,
    tasks: TaskService,
    tracer: RecordingTracer,
    store: InMemoryStore,
) -> None:
    task = await tasks.create(
        task_spec("flaky", retry={"max_attempts": 2, "base_delay_seconds": 1}), principal=ALICE
    )
    assert task.retry == RetryPolicy(max_attempts=2, base_delay=timedelta(seconds=1))
    with tracer.span("request"):
        first = await runs.trigger(task.id, principal=ALICE)
    execution = ExecutionService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    claimed = await execution.claim(first.id, worker_id="w")
    assert claimed is not None
    await execution.complete(first.id, claimed.token, ExecutionResult(status="failed"))

    [automatic] = [r for r in store.rows("runs") if r.retry_of == first.id]
    assert automatic.traceparent == first.traceparent
    assert automatic.created_at >= START


def test_the_no_op_tracer_records_nothing_and_has_no_context() -> None:
    with NO_TRACER.span("anything", attributes={"a": 1}) as span:
        span.set_attribute("b", 2)
        span.set_error("ignored")
        assert span.traceparent is None
        assert NO_TRACER.current_traceparent() is None
    assert NO_TRACER.start_trace("run.schedule") is None
