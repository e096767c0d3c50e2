"""Write-only task secrets: sealed on write, names only on read, opened for the run's worker
alone, masked by value in what the run reports."""

from __future__ import annotations

import base64
import random

import pytest
from application_fixtures import ALICE, OPERATOR, WORKER_ROLE, task_spec

from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict
from scheduler_application.execution.redaction import conceal_secrets, secret_variants
from scheduler_application.execution.remote_workers import RemoteWorkerService
from scheduler_application.execution.service import ClaimedRun, ExecutionService
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    FakeSecretBox,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task

TOKEN = "tok-3f9a8c2e71d0"


@pytest.fixture
def box() -> FakeSecretBox:
    return FakeSecretBox()


@pytest.fixture
def sealing_tasks(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, box: FakeSecretBox
) -> TaskService:
    return TaskService(
        uow_factory=uow_factory, clock=clock, secret_box=box, executor_policy=OPEN_EXECUTOR_POLICY
    )


@pytest.fixture
def opening_execution(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, box: FakeSecretBox
) -> ExecutionService:
    return ExecutionService(
        uow_factory=uow_factory,
        clock=clock,
        rng=random.Random(1),
        secret_box=box,
        executor_policy=OPEN_EXECUTOR_POLICY,
    )


async def _secret_task(tasks: TaskService, **secrets: str | None) -> Task:
    return await tasks.create(task_spec(secret_env=secrets or {"TOKEN": TOKEN}), principal=ALICE)


# -- writing -------------------------------------------------------------------------------------


async def test_create_seals_the_values_and_keeps_only_names_readable(
    sealing_tasks: TaskService, store: InMemoryStore, box: FakeSecretBox
) -> None:
    task = await _secret_task(sealing_tasks, TOKEN=TOKEN, OTHER="second-value")
    stored = store.row("tasks", task.id)
    assert stored.secret_env_names == ["OTHER", "TOKEN"]
    assert TOKEN not in repr(stored)
    assert all(TOKEN not in sealed for sealed in stored.secret_env.values())
    assert box.open(stored.secret_env["TOKEN"]) == TOKEN
    assert box.sealed == 2


async def test_without_a_key_a_task_with_secrets_is_refused_naming_the_field(
    tasks: TaskService,
) -> None:
    with pytest.raises(ValidationError) as error:
        await _secret_task(tasks)
    assert error.value.field == "secret_env"
    assert "secrets.key" in error.value.message


async def test_without_a_key_tasks_without_secrets_still_work(tasks: TaskService) -> None:
    task = await tasks.create(task_spec(secret_env={}), principal=ALICE)
    assert task.secret_env_names == []


async def test_update_sets_removes_and_keeps_names_left_out(
    sealing_tasks: TaskService, box: FakeSecretBox
) -> None:
    task = await _secret_task(sealing_tasks, TOKEN=TOKEN, KEEP="kept-value", GONE="gone-value")
    kept_sealed = task.secret_env["KEEP"]
    updated = await sealing_tasks.update(
        task.id, {"secret_env": {"TOKEN": "rotated-value", "GONE": None}}, principal=ALICE
    )
    assert updated.secret_env_names == ["KEEP", "TOKEN"]
    assert updated.secret_env["KEEP"] == kept_sealed
    assert box.open(updated.secret_env["TOKEN"]) == "rotated-value"
    untouched = await sealing_tasks.update(task.id, {"description": "x"}, principal=ALICE)
    assert untouched.secret_env_names == ["KEEP", "TOKEN"]


async def test_removing_every_secret_needs_no_key(
    sealing_tasks: TaskService, uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    task = await _secret_task(sealing_tasks)
    keyless = TaskService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    updated = await keyless.update(task.id, {"secret_env": {"TOKEN": None}}, principal=ALICE)
    assert updated.secret_env == {}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"secret_env": {"A=B": "x"}}, "secret_env"),
        ({"secret_env": {"1ABC": "x"}}, "secret_env"),
        ({"secret_env": {"": "x"}}, "secret_env"),
        ({"secret_env": {"SCHEDULER_RUN_ID": "x"}}, "secret_env"),
        ({"secret_env": {"TOKEN": 5}}, "secret_env.TOKEN"),
        ({"secret_env": {"TOKEN": "a\x00b"}}, "secret_env.TOKEN"),
        ({"secret_env": ["TOKEN"]}, "secret_env"),
        (
            {"params": {"argv": ["env"], "env": {"TOKEN": "plain"}}, "secret_env": {"TOKEN": "x"}},
            "secret_env",
        ),
        (
            {
                "executor": "http",
                "params": {"url": "https://example.com"},
                "secret_env": {"TOKEN": "x"},
            },
            "secret_env",
        ),
        ({"executor": "noop", "params": {}, "secret_env": {"TOKEN": "x"}}, "secret_env"),
        ({"params": {"argv": ["env"], "env": {"A=B": "1"}}}, "params.env"),
        ({"params": {"argv": ["env"], "env": {"9X": "1"}}}, "params.env"),
    ],
)
async def test_bad_secret_env_and_env_names_are_refused_naming_the_field(
    sealing_tasks: TaskService, spec: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as error:
        await sealing_tasks.create(task_spec(**spec), principal=ALICE)
    assert error.value.field == field


async def test_an_update_cannot_move_a_secret_task_to_an_executor_without_environment(
    sealing_tasks: TaskService,
) -> None:
    task = await _secret_task(sealing_tasks)
    with pytest.raises(ValidationError) as error:
        await sealing_tasks.update(
            task.id, {"executor": "http", "params": {"url": "https://example.com"}}, principal=ALICE
        )
    assert error.value.field == "secret_env"


async def test_an_update_cannot_add_a_plain_env_name_a_secret_has(
    sealing_tasks: TaskService,
) -> None:
    task = await _secret_task(sealing_tasks)
    with pytest.raises(ValidationError) as error:
        await sealing_tasks.update(
            task.id, {"params": {"argv": ["env"], "env": {"TOKEN": "x"}}}, principal=OPERATOR
        )
    assert error.value.field == "secret_env"


# -- running ---------------------------------------------------------------------------------------


async def _claim(
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    workers: WorkerService,
) -> ClaimedRun:
    task = await _secret_task(tasks)
    worker = await workers.register(
        RegisterWorker(name="w", hostname="h", pid=1, queues=("default",), capacity=1)
    )
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    claimed = await execution.claim(run.id, worker_id=worker.id)
    assert claimed is not None
    return claimed


async def test_a_claim_opens_the_secrets_into_the_execution_context_only(
    sealing_tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    opening_execution: ExecutionService,
    workers: WorkerService,
) -> None:
    claimed = await _claim(sealing_tasks, runs, relay, opening_execution, workers)
    context = claimed.context()
    assert context.secret_env == {"TOKEN": TOKEN}
    assert "TOKEN" not in context.params.get("env", {})
    assert TOKEN not in repr(claimed)
    assert TOKEN not in repr(context)
    assert claimed.secret_error is None


async def test_a_claim_with_a_key_that_does_not_open_the_secrets_says_why(
    sealing_tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    workers: WorkerService,
) -> None:
    wrong = ExecutionService(
        uow_factory=uow_factory,
        clock=clock,
        secret_box=FakeSecretBox("k2"),
        executor_policy=OPEN_EXECUTOR_POLICY,
    )
    claimed = await _claim(sealing_tasks, runs, relay, wrong, workers)
    assert claimed.secret_env == {}
    assert claimed.secret_error is not None
    assert "secrets.key" in claimed.secret_error


async def test_conceal_masks_the_value_and_simple_encodings_of_it() -> None:
    printed = (
        f"plain {TOKEN} reversed {TOKEN[::-1]} hex {TOKEN.encode().hex()} "
        f"b64 {base64.b64encode(TOKEN.encode()).decode()}"
    )
    result = conceal_secrets(
        ExecutionResult(
            status="failed", output=printed, error=f"bad {TOKEN}", result={"k": [TOKEN]}
        ),
        [TOKEN],
    )
    for text in (result.output, result.error, str(result.result)):
        assert TOKEN not in text
        assert TOKEN[::-1] not in text
    assert result.output is not None
    assert result.output.count("[REDACTED]") == 4
    assert secret_variants(["abc"]) == set()  # too short to mask by value


async def test_http_outcomes_are_masked_with_the_task_secrets_on_the_server(
    sealing_tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    opening_execution: ExecutionService,
    workers: WorkerService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
) -> None:
    remote = RemoteWorkerService(
        uow_factory=uow_factory, execution=opening_execution, workers=workers
    )
    worker = await remote.register(
        RegisterWorker(name="w", hostname="h", pid=1, queues=("default",), capacity=1),
        principal=WORKER_ROLE,
    )
    task = await _secret_task(sealing_tasks)
    await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    claimed = await remote.claim(worker.id, principal=WORKER_ROLE)
    assert claimed is not None
    assert claimed.secret_env == {"TOKEN": TOKEN}
    await remote.complete(
        claimed.run.id,
        worker_id=worker.id,
        token=claimed.token,
        result=ExecutionResult(status="succeeded", output=f"token={TOKEN[::-1]} {TOKEN}"),
        principal=WORKER_ROLE,
    )
    stored = store.row("runs", claimed.run.id)
    assert stored.status is RunStatus.SUCCEEDED
    assert TOKEN not in (stored.output or "")
    assert TOKEN[::-1] not in (stored.output or "")


async def test_only_a_worker_credential_is_handed_the_secrets(
    sealing_tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    opening_execution: ExecutionService,
    workers: WorkerService,
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    admin = Principal("root", Role.ADMIN)
    remote = RemoteWorkerService(
        uow_factory=uow_factory, execution=opening_execution, workers=workers
    )
    worker = await remote.register(
        RegisterWorker(name="w", hostname="h", pid=1, queues=("default",), capacity=1),
        principal=admin,
    )
    task = await _secret_task(sealing_tasks)
    await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    claimed = await remote.claim(worker.id, principal=admin)
    assert claimed is not None
    assert claimed.secret_env == {}


async def test_a_run_whose_secrets_cannot_be_opened_fails_before_reaching_an_http_worker(
    sealing_tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    workers: WorkerService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    store: InMemoryStore,
) -> None:
    keyless = ExecutionService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    remote = RemoteWorkerService(uow_factory=uow_factory, execution=keyless, workers=workers)
    worker = await remote.register(
        RegisterWorker(name="w", hostname="h", pid=1, queues=("default",), capacity=1),
        principal=WORKER_ROLE,
    )
    task = await _secret_task(sealing_tasks)
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    assert await remote.claim(worker.id, principal=WORKER_ROLE) is None
    failed = store.row("runs", run.id)
    assert failed.status in (RunStatus.FAILED, RunStatus.DEAD_LETTERED)
    assert "secrets.key" in (failed.error or "")
    with pytest.raises(Conflict):
        await keyless.complete(run.id, failed.version, ExecutionResult(status="succeeded"))
