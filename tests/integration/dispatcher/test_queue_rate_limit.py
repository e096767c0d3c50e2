"""A queue's rate limit over a real dispatcher, as its composition root builds it: from the
configuration (``dispatcher.queue_rate_limits``), or stored through the queue settings, which
win over the configured default. The runs of the limited queue are published at the limit
at most 10 % over the limit and not far under it (a loaded machine's scheduling stalls only
slow the relay; a limit read wrongly — the configured 3/s instead of the stored 10/s — lands far
below), those of another queue are not held back."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from pending_runs import PendingRuns
from scheduler_application.accounts.access import Principal
from scheduler_application.operations.queue_control import QueueChanges, QueueControl
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_dispatcher.bootstrap import build_dispatcher
from scheduler_domain.accounts import Role
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.run import TaskRun
from scheduler_infrastructure.config import DatabaseSettings, DispatcherSettings, Settings
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.resources import build_relay, open_resources

pytestmark = pytest.mark.timeout(90)

OWNER = Principal(subject_id="user-1", role=Role.USER)
RATE = 10  # runs per second: "metered=10/s"
WARM_UP = timedelta(seconds=1.5)  # past the bucket's initial burst of 10
WINDOW = timedelta(seconds=6)  # long enough that a scheduling stall of a loaded machine is noise
TRIGGERS = 100  # a backlog that keeps the bucket empty past warm-up + window


@pytest.mark.parametrize("stored", [False, True], ids=["configured", "stored-over-configured"])
async def test_a_queue_limit_holds_over_a_real_dispatcher(tmp_path: Path, stored: bool) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'queue-limit.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = Settings(
        database=DatabaseSettings(url=url),
        dispatcher=DispatcherSettings(
            relay_interval_seconds=0.05,
            metrics_port=0,
            # Stored: the configured default (3/s) must give way to the stored 10/s.
            queue_rate_limits=("metered=3/s",) if stored else (f"metered={RATE}/s",),
        ),
    )
    async with open_resources(settings) as resources:
        tasks = TaskService(uow_factory=resources.uow_factory, clock=resources.clock)
        # Pending before the dispatcher starts: its relay loop publishes the backlog.
        pending = PendingRuns(uow_factory=resources.uow_factory, clock=resources.clock)
        relay = build_relay(resources)  # the process's one relay, as `scheduler run` shares it
        runs = RunService(uow_factory=resources.uow_factory, clock=resources.clock, relay=relay)
        if stored:
            control = QueueControl(uow_factory=resources.uow_factory, clock=resources.clock)
            await control.update(
                "metered",
                QueueChanges(rate_limit=RateLimit.parse(f"{RATE}/s")),
                principal=Principal(subject_id="op", role=Role.OPERATOR),
            )
        metered = await tasks.create(
            {"name": "metered", "executor": "noop", "queue": "metered"}, principal=OWNER
        )
        free = await tasks.create(
            {"name": "free", "executor": "noop", "queue": "free"}, principal=OWNER
        )
        for _ in range(TRIGGERS):
            await pending.trigger(metered.id, principal=OWNER)
        for _ in range(30):
            await pending.trigger(free.id, principal=OWNER)

        dispatcher = build_dispatcher(resources, relay=relay)
        running = asyncio.create_task(dispatcher.run())
        await asyncio.wait_for(dispatcher.wait_started(), timeout=10)
        try:

            async def queued(task_id: str) -> list[TaskRun]:
                page = await runs.list(principal=OWNER, task_id=task_id, limit=200)
                return [run for run in page.items if run.queued_at is not None]

            async with asyncio.timeout(30):
                while len(await queued(free.id)) < 30:
                    await asyncio.sleep(0.05)
                free_stamps = sorted(run.queued_at for run in await queued(free.id))  # type: ignore[misc]
                first = free_stamps[0]
                end = first + WARM_UP + WINDOW
                while True:
                    stamps = sorted(run.queued_at for run in await queued(metered.id))  # type: ignore[misc]
                    if (stamps and stamps[-1] >= end) or len(stamps) == TRIGGERS:
                        break
                    await asyncio.sleep(0.1)
        finally:
            dispatcher.stop()
            await asyncio.wait_for(running, timeout=10)
            await relay.aclose()

    start = stamps[0] + WARM_UP
    in_window = [stamp for stamp in stamps if start <= stamp < start + WINDOW]
    expected = RATE * WINDOW.total_seconds()
    # Never over the limit (beyond 10 % of timing slack); under it only by what stalls of a
    # loaded machine cost (53 of 60 seen under CI's two workers), far above the 18 of a 3/s limit.
    assert 0.75 * expected <= len(in_window) <= 1.10 * expected, (len(in_window), expected)
    # The other queue is not held back: its 30 runs pass within a second, no 10/s spacing.
    assert free_stamps[-1] - free_stamps[0] < timedelta(seconds=1)
