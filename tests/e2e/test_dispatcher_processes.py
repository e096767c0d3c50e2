"""Dispatchers as real processes: every cron slot fires exactly once with several dispatchers,
and a dispatcher killed with kill -9 (at an arbitrary point of its tick cycle) neither
loses nor duplicates a slot (issue 4)."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from harness import Cluster
from scenario import Scenario

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def scenario(uow_factory: Any, tmp_path: Any) -> Scenario:
    return Scenario(uow_factory=uow_factory, workdir=tmp_path)


async def _slots_by_task(scenario: Scenario) -> dict[str, list[datetime]]:
    slots: dict[str, list[datetime]] = defaultdict(list)
    for run in await scenario.all_runs():
        if run.trigger.value == "schedule":
            slots[run.task_id].append(run.scheduled_for)
    return slots


def _assert_every_second_exactly_once(
    slots: dict[str, list[datetime]], start: datetime, end: datetime
) -> None:
    expected = []
    second = start
    while second <= end:
        expected.append(second)
        second += timedelta(seconds=1)
    for task_id, fired in slots.items():
        window = sorted(s for s in fired if start <= s <= end)
        assert window == expected, (task_id, len(window), len(expected))


@pytest.mark.timeout(200)
async def test_three_dispatchers_fire_every_slot_of_fifty_tasks_exactly_once(
    cluster_factory: Any, scenario: Scenario
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    for i in range(50):
        await scenario.noop_task(f"every-second-{i}", schedule={"cron": "* * * * * *"})
    cluster.worker("w1", SCHEDULER__WORKER__CAPACITY="32")
    cluster.worker("w2", SCHEDULER__WORKER__CAPACITY="32")
    for name in ("d1", "d2", "d3"):
        cluster.dispatcher(name)
    await asyncio.sleep(65)
    for process in cluster.processes:
        if process.name.startswith("d"):
            process.signal(signal.SIGTERM)
    for process in cluster.processes:
        if process.name.startswith("d"):
            assert await process.wait(30) == 0
    slots = await _slots_by_task(scenario)
    assert len(slots) == 50
    # The slots every dispatcher was up for: skip the start-up seconds, stop before shutdown.
    first = max(min(fired) for fired in slots.values()) + timedelta(seconds=2)
    last = min(max(fired) for fired in slots.values()) - timedelta(seconds=1)
    assert last - first >= timedelta(seconds=50)
    _assert_every_second_exactly_once(slots, first, last)
    for fired in slots.values():
        assert len(fired) == len(set(fired))  # no slot twice, anywhere


@pytest.mark.timeout(150)
async def test_dispatcher_killed_mid_tick_and_restarted_loses_and_duplicates_nothing(
    cluster_factory: Any, scenario: Scenario
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    for i in range(20):
        await scenario.noop_task(
            f"kill-tick-{i}", schedule={"cron": "* * * * * *"}, misfire={"policy": "catch_up"}
        )
    cluster.worker("w1", SCHEDULER__WORKER__CAPACITY="32")
    dispatcher = cluster.dispatcher("d1")
    await asyncio.sleep(8)
    dispatcher.signal(signal.SIGKILL)
    await dispatcher.wait(10)
    await asyncio.sleep(3)  # three slots pass with no dispatcher at all
    restarted = cluster.dispatcher("d1-restarted")
    await asyncio.sleep(10)
    restarted.signal(signal.SIGTERM)
    assert await restarted.wait(30) == 0
    slots = await _slots_by_task(scenario)
    assert len(slots) == 20
    first = max(min(fired) for fired in slots.values()) + timedelta(seconds=1)
    last = min(max(fired) for fired in slots.values()) - timedelta(seconds=1)
    assert last - first >= timedelta(seconds=15)
    # catch_up fires the slots missed while no dispatcher ran: none lost, none twice.
    _assert_every_second_exactly_once(slots, first, last)
