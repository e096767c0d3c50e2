"""Driving a cluster from the test process: tasks and runs through the application services,
and an execution ledger that the task's own process writes, so double execution is visible."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pending_runs import PendingRuns
from recording_queue import InMemoryRunQueue
from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_domain.accounts import Role, User
from scheduler_domain.events import RunEvent
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_worker.sandbox.policy import sandbox_policy

#: An operator: shell tasks are theirs to run under the default executor policy.
OWNER = Principal(subject_id="e2e-user", role=Role.OPERATOR)
#: An interpreter the task user can run (see ``default_python``).
TASK_PYTHON = sandbox_policy().python_executable

_LEDGER_SCRIPT = """
import os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
run = os.environ["SCHEDULER_RUN_ID"]
def note(word):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{word} {run}\\n".encode())
    os.close(fd)
note("start")
time.sleep(seconds)
note("end")
"""


@dataclass
class Scenario:
    uow_factory: SqlUnitOfWorkFactory
    workdir: Path

    def __post_init__(self) -> None:
        clock = SystemClock()
        self.tasks = TaskService(
            uow_factory=self.uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
        )
        # Runs are written pending, for the dispatcher processes under test to publish; the
        # service (its relay on a queue of its own, never used) only reads them.
        self.pending = PendingRuns(uow_factory=self.uow_factory, clock=clock)
        self.runs = RunService(
            uow_factory=self.uow_factory,
            clock=clock,
            relay=RunRelay(uow_factory=self.uow_factory, clock=clock, queue=InMemoryRunQueue()),
        )
        # Task processes run as other users (a uid of its own per run when the tests run as
        # root): the ledger lives where they can all write, not in pytest's private folders,
        # and exists beforehand, writable by all — a run creating it would own it, and the
        # next run, as another uid, could not append. It goes when the scenario does.
        shared = Path(tempfile.mkdtemp(prefix="scheduler-ledger-"))
        shared.chmod(0o777)
        weakref.finalize(self, shutil.rmtree, shared, True)
        self.ledger = shared / "ledger.txt"
        self.ledger.touch()
        self.ledger.chmod(0o666)

    async def ensure_owner(self) -> None:
        """The tasks' owner as a real operator account: the workers check the owner's role
        before every run, and refuse the runs of an owner that does not exist."""
        async with self.uow_factory() as uow:
            if await uow.users.get(OWNER.subject_id) is not None:
                return
            now = datetime.now(UTC)
            await uow.users.add(
                User(
                    id=OWNER.subject_id,
                    username=f"owner-{OWNER.subject_id}",
                    password_hash="!",
                    role=OWNER.role,
                    created_at=now,
                    updated_at=now,
                )
            )
            await uow.commit()

    async def ledger_task(self, name: str, *, seconds: float, **spec: object) -> str:
        await self.ensure_owner()
        """A task whose every execution writes ``start``/``end`` lines with its run id."""
        script = [TASK_PYTHON, "-c", _LEDGER_SCRIPT, str(self.ledger), str(seconds)]
        params = {"argv": script}
        task = await self.tasks.create(
            {"name": name, "executor": "shell", "params": params, **spec}, principal=OWNER
        )
        return task.id

    async def noop_task(self, name: str, **spec: object) -> str:
        await self.ensure_owner()
        task = await self.tasks.create({"name": name, "executor": "noop", **spec}, principal=OWNER)
        return task.id

    async def trigger(self, task_id: str, key: str | None = None) -> TaskRun:
        return await self.pending.trigger(task_id, principal=OWNER, idempotency_key=key)

    async def get(self, run_id: str) -> TaskRun:
        return await self.runs.get(run_id, principal=OWNER)

    async def all_runs(self) -> list[TaskRun]:
        found: list[TaskRun] = []
        cursor: str | None = None
        while True:
            page = await self.runs.list(principal=OWNER, limit=500, cursor=cursor)
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def runs_of(self, task_id: str) -> list[TaskRun]:
        page = await self.runs.list(principal=OWNER, task_id=task_id, limit=500)
        return sorted(page.items, key=lambda r: r.attempt)

    async def events(self, run_id: str) -> list[RunEvent]:
        return await self.runs.events(run_id, principal=OWNER)

    def ledger_counts(self) -> tuple[Counter[str], Counter[str]]:
        starts: Counter[str] = Counter()
        ends: Counter[str] = Counter()
        if self.ledger.exists():
            for line in self.ledger.read_text().splitlines():
                word, run_id = line.split()
                (starts if word == "start" else ends)[run_id] += 1
        return starts, ends

    async def worker_name_of(self, run_id: str) -> str | None:
        run = await self.get(run_id)
        if run.worker_id is None:
            return None
        async with self.uow_factory() as uow:
            worker = await uow.workers.get(run.worker_id)
        return worker.name if worker else None


async def settled(scenario: Scenario, run_ids: list[str]) -> bool:
    for run_id in run_ids:
        if not (await scenario.get(run_id)).status.is_final:
            return False
    return True


async def succeeded_per_task(scenario: Scenario) -> dict[str, int]:
    done: Counter[str] = Counter()
    for run in await scenario.all_runs():
        if run.status is RunStatus.SUCCEEDED:
            done[run.task_id] += 1
    return dict(done)
