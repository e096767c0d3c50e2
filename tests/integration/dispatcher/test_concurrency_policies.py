"""Concurrency policies over a real dispatcher and worker: ``buffer_one`` keeps its buffered
run waiting until the active one has finished, and ``replace`` stops the replaced run's
process at once, as their names promise."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
from dispatcher_stack import OWNER, dispatcher_stack, running_worker

from scheduler_domain.events import SkipReason
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(60)


async def test_buffer_one_starts_the_buffered_run_only_after_the_active_one_finished(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    """Slots every second, runs of 2.5 s: one run waits behind the active one (the slots in
    between are skipped ``buffer_full``) and starts only once the active one has finished."""
    async with dispatcher_stack(uow_factory) as stack, running_worker(stack.worker()):
        task_id = await stack.create_task(
            "buffered",
            executor="shell",
            params={"argv": ["sleep", "2.5"]},
            schedule={"interval_seconds": 1},
            concurrency="buffer_one",
        )

        async def two_finished() -> bool:
            runs = await stack.runs_of(task_id)
            return sum(run.status.is_final for run in runs) >= 2

        await stack.wait_for(two_finished, within=30)
        await stack.tasks.pause(task_id, principal=OWNER)
        runs = [run for run in await stack.runs_of(task_id) if run.started_at is not None]
        runs.sort(key=lambda run: run.started_at or stack.clock.now())
        finished = [run for run in runs if run.status.is_final]
        assert len(finished) >= 2
        assert all(run.status is RunStatus.SUCCEEDED for run in finished)
        for earlier, later in itertools.pairwise(runs):
            assert earlier.finished_at is not None, "a run started while another was running"
            assert later.started_at is not None
            assert later.started_at >= earlier.finished_at
            # It was created while the earlier one ran, and waited for it.
            assert later.created_at < earlier.finished_at - timedelta(seconds=0.5)
        preview = await stack.tasks.schedule_preview(task_id, principal=OWNER, decisions=50)
        assert SkipReason.BUFFER_FULL in {d.reason for d in preview.recent_decisions}


def _live_pids(argv: list[str]) -> set[int]:
    """The live (not zombie) processes whose command line is exactly ``argv``."""
    wanted = "\0".join(argv).encode() + b"\0"
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() != wanted:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if state != "Z":
            found.add(int(entry.name))
    return found


async def test_replace_stops_the_replaced_runs_process_within_two_seconds(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    """With the default heartbeat (10 s), the process of the run a new slot replaces is gone
    within 2 s of the replacement."""
    argv = ["sleep", f"300.{secrets.randbelow(10**6):06d}"]
    async with (
        dispatcher_stack(uow_factory) as stack,
        running_worker(stack.worker(heartbeat_interval=timedelta(seconds=10))),
    ):
        task_id = await stack.create_task(
            "replaced",
            executor="shell",
            params={"argv": argv},
            schedule={"interval_seconds": 2},
            concurrency="replace",
        )

        async def first_started() -> bool:
            return bool(_live_pids(argv))

        await stack.wait_for(first_started, within=20)
        [pid] = _live_pids(argv)
        runs = await stack.runs_of(task_id)
        first = next(run for run in runs if run.status is RunStatus.RUNNING)

        async def replaced() -> bool:
            run = await stack.runs.get(first.id, principal=OWNER)
            return run.status is RunStatus.CANCELLED

        await stack.wait_for(replaced, within=10)
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def gone() -> bool:
            return pid not in _live_pids(argv)

        await stack.wait_for(gone, within=2.0)
        assert loop.time() - start < 2.0
        await stack.tasks.pause(task_id, principal=OWNER)
