"""A cancelled run's process is gone within about a second, not at the worker's next heartbeat
(10 s by default): the worker checks its held runs between heartbeats."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
from execution_stack import OWNER, Stack, running

from in_process_worker import in_process_worker
from scheduler_domain.status import RunStatus
from scheduler_worker.runtime import WorkerOptions, WorkerRuntime

pytestmark = pytest.mark.timeout(60)


def _pids_running(argv: list[str]) -> list[int]:
    """The live (not zombie) processes whose command line is exactly ``argv``."""
    wanted = "\0".join(argv).encode() + b"\0"
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() != wanted:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if state != "Z":
            found.append(int(entry.name))
    return found


def _slow_heartbeat_worker(stack: Stack) -> WorkerRuntime:
    """A worker with the default heartbeat (10 s) and a lease long enough that neither the
    heartbeat nor the reaper is what stops the run."""
    return in_process_worker(
        uow_factory=stack.uow_factory,
        clock=stack.clock,
        queue=stack.queue,
        options=WorkerOptions(
            capacity=2,
            heartbeat_interval=timedelta(seconds=10),
            lease=timedelta(seconds=60),
            drain_timeout=timedelta(seconds=5),
            executor_grace_seconds=2.0,
        ),
    )


async def _wait(condition: object, *, within: float) -> float:
    """Seconds until ``condition()`` holds (polled every 20 ms), failing after ``within``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)
    return loop.time() - start


async def test_a_cancelled_runs_process_is_gone_within_two_seconds(stack: Stack) -> None:
    # A unique duration makes the process easy to find by its command line.
    argv = ["sleep", f"300.{secrets.randbelow(10**6):06d}"]
    task_id = await stack.create_task(name="long", executor="shell", params={"argv": argv})
    async with running(_slow_heartbeat_worker(stack)) as worker:
        run = await stack.trigger(task_id)
        await _wait(lambda: bool(_pids_running(argv)), within=20)
        assert (await stack.runs.get(run.id, principal=OWNER)).status is RunStatus.RUNNING

        await stack.runs.cancel(run.id, principal=OWNER)
        took = await _wait(lambda: not _pids_running(argv), within=2.0)

        assert took < 2.0
        await _wait(lambda: worker.active_runs == 0, within=10)
        assert worker.stats.stopped == 1
    assert (await stack.runs.get(run.id, principal=OWNER)).status is RunStatus.CANCELLED
