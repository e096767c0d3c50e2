"""The heartbeat loop's stop check: between heartbeats, held runs that must stop are stopped,
and a worker holding nothing asks nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from scheduler_worker.heartbeat import HeartbeatLoop

pytestmark = pytest.mark.timeout(10)


class RecordingExecution:
    """Answers ``runs_to_stop`` with ``stop`` and records every call."""

    def __init__(self, stop: list[str]) -> None:
        self.stop = stop
        self.checks: list[list[tuple[str, int]]] = []
        self.heartbeats = 0

    async def runs_to_stop(self, worker_id: str, held: list[tuple[str, int]]) -> list[str]:
        self.checks.append(list(held))
        return [run_id for run_id, _ in held if run_id in self.stop]

    async def heartbeat(self, worker_id: str, held: Any) -> Any:
        self.heartbeats += 1
        raise AssertionError("the heartbeat is not due in this test")


def _loop(execution: RecordingExecution, held: list[tuple[str, int]], stopped: list[str]) -> Any:
    return HeartbeatLoop(
        execution=execution,  # type: ignore[arg-type]
        worker_id="w-1",
        interval=timedelta(seconds=30),
        lease=timedelta(seconds=60),
        active=lambda: held,
        on_stop=stopped.append,
        on_drain=lambda: None,
        stop_check_interval=timedelta(seconds=0.05),
    )


async def test_a_cancelled_run_is_stopped_between_heartbeats() -> None:
    execution = RecordingExecution(stop=["cancelled"])
    stopped: list[str] = []
    loop = _loop(execution, [("kept", 1), ("cancelled", 3)], stopped)
    async with loop.running(), asyncio.timeout(2):
        while not stopped:
            await asyncio.sleep(0.01)
    assert stopped[0] == "cancelled"
    assert "kept" not in stopped
    assert execution.checks[0] == [("kept", 1), ("cancelled", 3)]
    assert execution.heartbeats == 0


async def test_a_worker_holding_nothing_sends_no_stop_check() -> None:
    execution = RecordingExecution(stop=[])
    loop = _loop(execution, [], [])
    await loop.check_stops()
    assert execution.checks == []


class RetiredExecution(RecordingExecution):
    """The worker's row is gone: every heartbeat is answered NotFound."""

    async def heartbeat(self, worker_id: str, held: Any) -> Any:
        from scheduler_application.errors import NotFound

        self.heartbeats += 1
        raise NotFound(f"worker {worker_id} is not registered", field="worker_id")


async def test_a_worker_that_was_retired_stops_its_runs_and_itself() -> None:
    execution = RetiredExecution(stop=[])
    stopped: list[str] = []
    gone: list[bool] = []
    loop = HeartbeatLoop(
        execution=execution,  # type: ignore[arg-type]
        worker_id="w-1",
        interval=timedelta(seconds=30),
        lease=timedelta(seconds=60),
        active=lambda: [("held", 1)],
        on_stop=stopped.append,
        on_drain=lambda: None,
        on_gone=lambda: gone.append(True),
    )
    await loop.beat()
    assert stopped == ["held"]
    assert gone == [True]
