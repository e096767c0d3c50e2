"""The combined mode in one process, as ``scheduler run`` wires it: the API's services, every
dispatcher loop and a worker, built by their composition roots on one :class:`Resources` (a
migrated SQLite file and the memory queue), so all of them report into one registry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler_api.bootstrap import build_services
from scheduler_api.services import ApiServices
from scheduler_application.accounts.access import Principal
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_dispatcher.bootstrap import build_dispatcher, build_relay
from scheduler_dispatcher.loop_group import LoopGroup
from scheduler_domain.accounts import Role
from scheduler_domain.run import TaskRun
from scheduler_infrastructure.config import (
    ApiSettings,
    DatabaseSettings,
    DispatcherSettings,
    Settings,
    WorkerSettings,
)
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.resources import Resources, open_resources
from scheduler_worker.bootstrap import build_worker
from scheduler_worker.runtime import WorkerRuntime

OWNER = Principal(subject_id="user-1", role=Role.USER)
JWT_SECRET = "observability-test-secret-" + "x" * 32


def stack_settings(database_url: str) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url),
        api=ApiSettings(jwt_secret=JWT_SECRET),
        worker=WorkerSettings(
            capacity=4,
            lease_seconds=3.0,
            heartbeat_seconds=0.3,
            drain_timeout_seconds=5.0,
            metrics_port=0,
        ),
        dispatcher=DispatcherSettings(
            max_sleep_seconds=0.1,
            relay_interval_seconds=0.05,
            reaper_interval_seconds=0.2,
            gauge_interval_seconds=0.1,
            metrics_port=0,
        ),
    )


@dataclass
class ObservedStack:
    resources: Resources
    services: ApiServices
    dispatcher: LoopGroup
    worker: WorkerRuntime
    #: Runs a test has seen finish so far (for tests that run batches).
    done: int = 0

    def value(self, name: str, **labels: str) -> float:
        """A sample of the process registry; 0 when the series does not exist."""
        found = self.resources.metrics.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    async def create_task(self, name: str, **spec: Any) -> str:
        spec.setdefault("executor", "noop")
        task = await self.services.tasks.create({"name": name, **spec}, principal=OWNER)
        return task.id

    async def trigger(self, task_id: str) -> TaskRun:
        return await self.services.runs.trigger(task_id, principal=OWNER)

    async def runs_of(self, task_id: str) -> list[TaskRun]:
        page = await self.services.runs.list(principal=OWNER, task_id=task_id, limit=200)
        return sorted(page.items, key=lambda r: (r.scheduled_for, r.attempt))

    async def statuses(self, task_id: str) -> list[str]:
        return [run.status.value for run in await self.runs_of(task_id)]

    async def until(
        self, check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, within: float = 20
    ) -> None:
        async with asyncio.timeout(within):
            while True:
                outcome = check()
                if asyncio.iscoroutine(outcome):
                    outcome = await outcome
                if outcome:
                    return
                await asyncio.sleep(0.05)


async def migrated_sqlite(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    return url


@contextlib.asynccontextmanager
async def observed_stack(
    database_url: str, *, settings: Settings | None = None
) -> AsyncIterator[ObservedStack]:
    """``settings`` (default: :func:`stack_settings`) must name ``database_url``."""
    async with open_resources(settings or stack_settings(database_url)) as opened:
        # A single trusted team's install: its users run python and shell tasks.
        resources = dataclasses.replace(opened, executor_policy=OPEN_EXECUTOR_POLICY)
        relay = build_relay(resources)  # one per process, as `scheduler run` does
        services = build_services(resources, relay=relay)
        dispatcher = build_dispatcher(resources, relay=relay)
        async with build_worker(resources) as worker:
            dispatching = asyncio.create_task(dispatcher.run())
            working = asyncio.create_task(worker.run())
            await asyncio.wait_for(dispatcher.wait_started(), timeout=10)
            await asyncio.wait_for(worker.wait_started(), timeout=10)
            try:
                yield ObservedStack(
                    resources=resources, services=services, dispatcher=dispatcher, worker=worker
                )
            finally:
                worker.stop()
                await asyncio.wait_for(working, timeout=30)
                dispatcher.stop()
                await asyncio.wait_for(dispatching, timeout=30)
                await relay.aclose()
