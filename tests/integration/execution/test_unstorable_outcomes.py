"""Whatever bytes a task prints or returns, its outcome is recorded (PostgreSQL's text and JSONB
refuse NUL characters; UTF-8 refuses lone surrogates): the run ends, with the text made
storable, instead of an outcome nobody can write and a run retried forever."""

from __future__ import annotations

import pytest
from execution_stack import OWNER

from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.execution.service import ExecutionService, Outcome
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.memory import MemoryRunQueue

HOSTILE = "env A=1\x00B=2\x00 and a lone surrogate \udcff end"


@pytest.mark.parametrize("batched", [False, True])
async def test_an_outcome_with_nul_and_surrogates_is_recorded(
    uow_factory: SqlUnitOfWorkFactory, batched: bool
) -> None:
    clock = SystemClock()
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    execution = ExecutionService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    task = await tasks.create({"name": "leaky", "executor": "noop"}, principal=OWNER)
    async with MemoryRunQueue() as queue:
        relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
        runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
        run = await runs.trigger(task.id, principal=OWNER)
    claimed = await execution.claim(run.id, worker_id="w")
    assert claimed is not None
    result = ExecutionResult(
        status="failed",
        error=HOSTILE,
        output=HOSTILE,
        result={"value\x00": [HOSTILE, {"k": "\x00"}]},
    )

    if batched:
        [answer] = await execution.complete_many(
            [Outcome(run_id=run.id, token=claimed.token, result=result)]
        )
        assert not isinstance(answer, Exception), answer
    else:
        await execution.complete(run.id, claimed.token, result)

    stored = await runs.get(run.id, principal=OWNER)
    assert stored.status is RunStatus.DEAD_LETTERED
    assert stored.output == "env A=1\ufffdB=2\ufffd and a lone surrogate ? end"
    assert stored.error == stored.output
    assert stored.result == {"value\ufffd": [stored.output, {"k": "\ufffd"}]}
