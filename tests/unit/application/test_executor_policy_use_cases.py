"""The executor policy at the two places it is enforced: a task's creation or update (the
caller's role) and each claim (the owner's role as it is at that moment)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from application_fixtures import ALICE, OPERATOR, START, task_spec

from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import PermissionDenied, Unavailable
from scheduler_application.execution.service import ExecutionService
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWork,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role, User
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_policy import ExecutorPolicy
from scheduler_domain.status import RunStatus

POLICY = ExecutorPolicy(python_allow=("json:*",))


@pytest.fixture
def tasks(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> TaskService:
    return TaskService(uow_factory=uow_factory, clock=clock, executor_policy=POLICY)


@pytest.fixture(params=["transaction", "statement units"])
def execution(
    request: pytest.FixtureRequest, uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> ExecutionService:
    """Claims in one transaction, or started in statement units of work (the in-memory
    factory stands in: a start is committed before anything else happens) with the owners'
    roles read by the start and the refused runs failed in a transaction after it."""
    return ExecutionService(
        uow_factory=uow_factory,
        clock=clock,
        executor_policy=POLICY,
        statement_uow_factory=uow_factory if request.param == "statement units" else None,
    )


def _user(user_id: str, role: Role) -> User:
    return User(
        id=user_id,
        username=user_id,
        password_hash="x",
        role=role,
        created_at=START,
        updated_at=START,
    )


async def test_a_user_may_not_create_a_shell_task(tasks: TaskService) -> None:
    with pytest.raises(PermissionDenied) as refused:
        await tasks.create(task_spec(executor="shell"), principal=ALICE)
    assert refused.value.field == "executor"
    assert "'shell'" in refused.value.message
    assert "'user'" in refused.value.message


async def test_a_user_may_create_noop_and_http_tasks(tasks: TaskService) -> None:
    await tasks.create(task_spec("a", executor="noop", params={}), principal=ALICE)
    await tasks.create(
        task_spec("b", executor="http", params={"url": "https://example.org/"}), principal=ALICE
    )


async def test_a_user_may_not_turn_a_task_into_a_shell_task(tasks: TaskService) -> None:
    task = await tasks.create(task_spec(executor="noop", params={}), principal=ALICE)
    with pytest.raises(PermissionDenied):
        await tasks.update(
            task.id, {"executor": "shell", "params": {"argv": ["id"]}}, principal=ALICE
        )


async def test_an_operator_may_create_a_shell_task(tasks: TaskService) -> None:
    await tasks.create(task_spec(executor="shell"), principal=OPERATOR)


async def test_python_callables_must_be_registered(tasks: TaskService) -> None:
    await tasks.create(
        task_spec("ok", executor="python", params={"callable": "json:dumps"}), principal=OPERATOR
    )
    for n, target in enumerate(("builtins:eval", "os:system", "subprocess:run", "math:sqrt")):
        with pytest.raises(ValidationError) as refused:
            await tasks.create(
                task_spec(f"t{n}", executor="python", params={"callable": target}),
                principal=OPERATOR,
            )
        assert refused.value.field == "params.callable"


async def _claimable_shell_run(
    store: InMemoryStore, tasks: TaskService, runs: RunService, relay: RunRelay, role: Role
) -> str:
    store.put("users", _user(OPERATOR.subject_id, role))
    task = await tasks.create(task_spec(executor="shell"), principal=OPERATOR)
    run = await runs.trigger(task.id, principal=OPERATOR)
    await relay.relay_pending()
    return run.id


async def test_a_claim_refuses_the_run_of_an_owner_demoted_since(
    store: InMemoryStore,
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
) -> None:
    run_id = await _claimable_shell_run(store, tasks, runs, relay, Role.OPERATOR)
    store.put("users", _user(OPERATOR.subject_id, Role.USER))  # demoted since

    assert await execution.claim(run_id, worker_id="w") is None
    run = next(r for r in store.rows("runs") if r.id == run_id)
    assert run.status is RunStatus.DEAD_LETTERED
    assert "not allowed for role 'user'" in (run.error or "")
    assert not [r for r in store.rows("runs") if r.retry_of == run_id]  # no retry either


async def test_a_batch_claim_hands_out_only_what_the_policy_allows(
    store: InMemoryStore,
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    clock: FakeClock,
) -> None:
    refused_id = await _claimable_shell_run(store, tasks, runs, relay, Role.OPERATOR)
    allowed = await tasks.create(task_spec("fine", executor="noop", params={}), principal=ALICE)
    allowed_run = await runs.trigger(allowed.id, principal=ALICE)
    await relay.relay_pending()
    store.put("users", _user(OPERATOR.subject_id, Role.VIEWER))
    clock.advance(timedelta(seconds=1))

    claimed = await execution.claim_many([refused_id, allowed_run.id], worker_id="w")

    assert list(claimed) == [allowed_run.id]
    refused = next(r for r in store.rows("runs") if r.id == refused_id)
    assert refused.status is RunStatus.DEAD_LETTERED


async def test_a_claim_still_hands_out_the_run_of_an_owner_who_keeps_the_role(
    store: InMemoryStore,
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
) -> None:
    run_id = await _claimable_shell_run(store, tasks, runs, relay, Role.OPERATOR)
    claimed = await execution.claim(run_id, worker_id="w")
    assert claimed is not None
    assert claimed.executor == "shell"


async def test_a_claim_refuses_a_python_callable_no_longer_registered(
    store: InMemoryStore,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
) -> None:
    store.put("users", _user(OPERATOR.subject_id, Role.OPERATOR))
    task = await tasks.create(
        task_spec(executor="python", params={"callable": "json:dumps"}), principal=OPERATOR
    )
    run = await runs.trigger(task.id, principal=OPERATOR)
    await relay.relay_pending()
    # The deployer removed the callable from the allow-list since.
    execution = ExecutionService(uow_factory=uow_factory, clock=clock)
    assert await execution.claim(run.id, worker_id="w") is None
    stored = next(r for r in store.rows("runs") if r.id == run.id)
    assert "not a registered task callable" in (stored.error or "")


async def test_an_executor_no_worker_provides_is_refused_at_creation(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=ExecutorPolicy())
    with pytest.raises(ValidationError) as refused:
        await tasks.create(task_spec(executor="ftp", params={}), principal=OPERATOR)
    assert refused.value.field == "executor"
    assert "'ftp'" in refused.value.message
    assert "noop, python, shell" in refused.value.message


async def test_a_declared_plugin_executor_is_accepted(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    policy = ExecutorPolicy(plugin_names=frozenset({"ftp"}))
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=policy)
    task = await tasks.create(task_spec(executor="ftp", params={"host": "h"}), principal=OPERATOR)
    with pytest.raises(ValidationError) as refused:
        await tasks.update(task.id, {"executor": "sftp"}, principal=OPERATOR)
    assert refused.value.field == "executor"


async def test_runs_started_at_once_are_handed_out_even_if_failing_a_refused_one_fails(
    store: InMemoryStore,
    uow_factory: InMemoryUnitOfWorkFactory,
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    clock: FakeClock,
) -> None:
    """Started in a statement unit, the runs are committed as started before the refused one
    is failed: when that write fails (the database went away), the allowed run is handed
    out all the same — else nobody would run it until its lease lapsed — and the refused one
    stays running, never executed, for the reaper."""

    def no_transaction() -> InMemoryUnitOfWork:
        raise Unavailable("the database went away", dependency="database")

    execution = ExecutionService(
        uow_factory=no_transaction,
        clock=clock,
        executor_policy=POLICY,
        statement_uow_factory=uow_factory,
    )
    refused_id = await _claimable_shell_run(store, tasks, runs, relay, Role.OPERATOR)
    allowed = await tasks.create(task_spec("fine", executor="noop", params={}), principal=ALICE)
    allowed_run = await runs.trigger(allowed.id, principal=ALICE)
    await relay.relay_pending()
    store.put("users", _user(OPERATOR.subject_id, Role.VIEWER))

    claimed = await execution.claim_many([refused_id, allowed_run.id], worker_id="w")

    assert list(claimed) == [allowed_run.id]
    refused = next(r for r in store.rows("runs") if r.id == refused_id)
    assert refused.status is RunStatus.RUNNING
