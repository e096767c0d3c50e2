"""A task's ``secret_env`` through the real stack (SQLite and PostgreSQL): sealed with Fernet in
the database, opened for the worker's run, and masked in what the run stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from execution_stack import OWNER, PYTHON, running
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from in_process_worker import builtin_registry, in_process_worker
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.ports.redaction import NO_SECRET_SCOPE, SecretScope
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.memory import MemoryRunQueue
from scheduler_infrastructure.security.secret_box import FernetSecretBox, generate_key
from scheduler_infrastructure.telemetry.redaction import RunSecrets, SecretRedactor
from scheduler_worker.runtime import WorkerOptions, WorkerRuntime

SECRET = "hunter2-" + "q7Zp0xLm3"
PRINTS = (
    "import os\n"
    "copy = os.environ['COPY']\n"
    "print('secret', os.environ.get('TOKEN', '<not passed>'))\n"
    "print('copy', copy)\n"
    "print('reversed', copy[::-1])\n"
)


async def _raw_secret_env(engine: AsyncEngine, task_id: str) -> str:
    async with engine.connect() as connection:
        value = (
            await connection.execute(
                text("SELECT secret_env FROM tasks WHERE id = :id"), {"id": task_id}
            )
        ).scalar_one()
    return value if isinstance(value, str) else json.dumps(value)


@pytest.fixture
def box() -> FernetSecretBox:
    return FernetSecretBox(keys=[generate_key()])


@pytest.fixture
def tasks(uow_factory: SqlUnitOfWorkFactory, box: FernetSecretBox) -> TaskService:
    return TaskService(
        uow_factory=uow_factory,
        clock=SystemClock(),
        secret_box=box,
        executor_policy=OPEN_EXECUTOR_POLICY,
    )


def _worker(
    uow_factory: SqlUnitOfWorkFactory,
    clock: SystemClock,
    queue: MemoryRunQueue,
    box: FernetSecretBox,
    options: WorkerOptions,
    *,
    secret_scope: SecretScope = NO_SECRET_SCOPE,
) -> WorkerRuntime:
    """A worker runtime whose execution opens secrets with ``box``."""
    return in_process_worker(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        options=options,
        executors=builtin_registry(),
        secret_box=box,
        secret_scope=secret_scope,
    )


async def test_secret_env_is_encrypted_at_rest_and_never_in_plain_text(
    tasks: TaskService, engine: AsyncEngine, box: FernetSecretBox
) -> None:
    task = await tasks.create(
        {
            "name": "with-secret",
            "executor": "shell",
            "params": {"argv": ["true"]},
            "secret_env": {"TOKEN": SECRET},
        },
        principal=OWNER,
    )
    raw = await _raw_secret_env(engine, task.id)
    assert SECRET not in raw
    assert "TOKEN" in raw
    sealed = json.loads(raw)["TOKEN"]
    assert box.open(sealed) == SECRET
    read_back = await tasks.get(task.id, principal=OWNER)
    assert read_back.secret_env_names == ["TOKEN"]
    updated = await tasks.update(task.id, {"secret_env": {"TOKEN": None}}, principal=OWNER)
    assert updated.secret_env == {}
    async with engine.connect() as connection:
        cleared = (
            await connection.execute(
                text("SELECT secret_env FROM tasks WHERE id = :id"), {"id": task.id}
            )
        ).scalar_one()
    assert cleared is None


class WatchedRunSecrets:
    """The process's :class:`RunSecrets`, also noting what a log line holding the secret looks
    like once the run's values are registered (that is, while the run executes)."""

    def __init__(self) -> None:
        self.registry = RunSecrets()
        self.log = SecretRedactor(run_secrets=self.registry)
        self.seen_while_running: list[str] = []

    @contextlib.contextmanager
    def hide(self, values: Collection[str]) -> Iterator[None]:
        with self.registry.hide(values):
            self.seen_while_running.append(self.log.redact(f"log line {SECRET}"))
            yield


async def test_a_shell_run_gets_its_secrets_and_its_stored_output_masks_them(
    uow_factory: SqlUnitOfWorkFactory, tasks: TaskService, box: FernetSecretBox
) -> None:
    clock = SystemClock()
    scope = WatchedRunSecrets()
    async with MemoryRunQueue() as queue:
        relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
        runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
        runtime = _worker(
            uow_factory,
            clock,
            queue,
            box,
            WorkerOptions(capacity=1, heartbeat_interval=timedelta(seconds=1)),
            secret_scope=scope,
        )
        task = await tasks.create(
            {
                "name": "prints-its-secret",
                "executor": "shell",
                "params": {"argv": [PYTHON, "-c", PRINTS], "env": {"COPY": SECRET}},
                "secret_env": {"TOKEN": SECRET},
            },
            principal=OWNER,
        )
        async with running(runtime):
            run = await runs.trigger(task.id, principal=OWNER)
            await relay.relay_pending()
            async with asyncio.timeout(30):
                while not (run := await runs.get(run.id, principal=OWNER)).status.is_final:
                    await asyncio.sleep(0.05)
    assert run.status is RunStatus.SUCCEEDED, run.error
    output = run.output or ""
    assert SECRET not in output
    assert SECRET[::-1] not in output
    assert "secret [REDACTED]" in output  # the task had it, and printed it
    assert "copy [REDACTED]" in output
    assert "reversed [REDACTED]" in output
    # Logs and spans mask it while the run is in hand; the values are dropped afterwards.
    assert scope.seen_while_running == ["log line [REDACTED]"]
    assert len(scope.registry) == 0
    assert scope.log.redact(SECRET) == SECRET


async def test_the_live_output_of_a_running_run_masks_its_secrets(
    uow_factory: SqlUnitOfWorkFactory, tasks: TaskService, box: FernetSecretBox
) -> None:
    clock = SystemClock()
    async with MemoryRunQueue() as queue:
        relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
        runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
        runtime = _worker(
            uow_factory,
            clock,
            queue,
            box,
            WorkerOptions(
                capacity=1,
                heartbeat_interval=timedelta(seconds=1),
                live_output_interval=timedelta(seconds=0.1),
            ),
        )
        slow = PRINTS + "import sys, time\nsys.stdout.flush()\ntime.sleep(30)\n"
        task = await tasks.create(
            {
                "name": "prints-its-secret-slowly",
                "executor": "shell",
                "params": {"argv": [PYTHON, "-c", slow], "env": {"COPY": SECRET}},
                "secret_env": {"TOKEN": SECRET},
            },
            principal=OWNER,
        )
        async with running(runtime):
            run = await runs.trigger(task.id, principal=OWNER)
            await relay.relay_pending()
            async with asyncio.timeout(30):
                while "reversed" not in (
                    (run := await runs.get(run.id, principal=OWNER)).output or ""
                ):
                    await asyncio.sleep(0.05)
            await runs.cancel(run.id, principal=OWNER)
    assert run.status is RunStatus.RUNNING  # seen while it ran
    output = run.output or ""
    assert SECRET not in output
    assert SECRET[::-1] not in output
    assert "secret [REDACTED]" in output
    assert "reversed [REDACTED]" in output


async def test_a_run_whose_secrets_the_worker_cannot_open_fails_without_running(
    uow_factory: SqlUnitOfWorkFactory, tasks: TaskService, tmp_path: Path
) -> None:
    clock = SystemClock()
    marker = tmp_path / "ran"
    async with MemoryRunQueue() as queue:
        relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
        runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
        other_key = FernetSecretBox(keys=[generate_key()])
        runtime = _worker(
            uow_factory,
            clock,
            queue,
            other_key,
            WorkerOptions(capacity=1, heartbeat_interval=timedelta(seconds=1)),
        )
        task = await tasks.create(
            {
                "name": "unopenable",
                "executor": "shell",
                "params": {"argv": ["touch", str(marker)]},
                "secret_env": {"TOKEN": SECRET},
            },
            principal=OWNER,
        )
        async with running(runtime):
            run = await runs.trigger(task.id, principal=OWNER)
            await relay.relay_pending()
            async with asyncio.timeout(30):
                while not (run := await runs.get(run.id, principal=OWNER)).status.is_final:
                    await asyncio.sleep(0.05)
    assert run.status in (RunStatus.FAILED, RunStatus.DEAD_LETTERED)
    assert "secrets.key" in (run.error or "")
    assert not marker.exists()
