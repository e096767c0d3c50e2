"""Dispatchers as real processes (PostgreSQL): every cron slot fires exactly once with several
dispatchers, and a dispatcher killed with kill -9 during its tick and restarted after an outage
neither loses nor duplicates a slot, each misfire policy deciding the slots the outage left
(issue 4)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import Cluster, eventually
from scenario import Scenario

from scheduler_domain.events import SkipReason, SlotDecision

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

    async def every_task_fired() -> bool:
        return len(await _slots_by_task(scenario)) == 50

    await eventually(every_task_fired, timeout=60, interval=0.5)
    # Then 20 s of three dispatchers racing for every second of 50 tasks (~1,000 slots): the
    # property is per slot, so a longer watch adds CI time and no case.
    await asyncio.sleep(20)
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
    assert last - first >= timedelta(seconds=15)
    _assert_every_second_exactly_once(slots, first, last)
    for fired in slots.values():
        assert len(fired) == len(set(fired))  # no slot twice, anywhere


# -- kill -9 mid-tick, a five-interval outage, a restart: each misfire policy --------------------

INTERVAL = timedelta(seconds=2)
GRACE = timedelta(seconds=1)
OUTAGE_INTERVALS = 5
#: name -> misfire settings; eight tasks of each.
POLICIES: dict[str, dict[str, Any]] = {
    "catch_up": {"policy": "catch_up", "grace_seconds": 1},  # cap 10: every late slot
    "catch_up_cap3": {"policy": "catch_up", "catch_up_cap": 3, "grace_seconds": 1},
    "run_once": {"policy": "run_once", "grace_seconds": 1},
    "skip": {"policy": "skip", "grace_seconds": 1},
}
TASKS_PER_POLICY = 8


def _expected_fire(policy: str, late: list[datetime], on_time: list[datetime]) -> list[datetime]:
    """What the policy fires of the slots one tick saw (DESIGN §8, ``misfire.py``)."""
    if policy == "skip":
        return on_time
    if policy == "run_once":
        return on_time if on_time else late[-1:]
    cap = 3 if policy == "catch_up_cap3" else 10
    return late[-cap:] + on_time


async def _decisions(scenario: Scenario, task_id: str) -> list[SlotDecision]:
    async with scenario.uow_factory() as uow:
        decisions = await uow.decisions.list_for_task(task_id, limit=1000)
    return sorted(decisions, key=lambda d: d.slot)


def _next_boundary(after: float) -> float:
    step = INTERVAL.total_seconds()
    return (int(after // step) + 1) * step


@pytest.mark.timeout(120)
async def test_kill_9_mid_tick_and_a_five_interval_outage_each_misfire_policy_decides_the_slots(
    cluster_factory: Any, scenario: Scenario
) -> None:
    """Tasks every 2 s (grace 1 s) under each misfire policy; the only dispatcher is killed with
    kill -9 just after a slot came due (aimed at its tick: it wakes at the slot and fires 32
    tasks in one transaction), stays down for five intervals and is started again. (That tick
    decides the next slot ahead; when its commit beats the kill, that slot is the first
    dispatcher's.)

    Every slot then has exactly one decision: fired (exactly one run, with that run's id) or
    skipped with reason ``misfire``; and each tick of the restarted dispatcher chose what the
    task's policy says of the slots it saw — late (older than the grace) or on time, judged
    from the tick's own instant (the decisions' ``at``), since when the new process first
    ticks depends on how fast it starts. The outage's slots (but the one the killed tick may
    have committed) all come up in that first tick, at least four of them late (three if so):
    ``catch_up`` fires them all, ``catch_up`` with cap 3 the three newest, ``run_once`` one (or
    none when an on-time slot fires), ``skip`` none."""
    cluster: Cluster = cluster_factory("postgres")
    policy_of: dict[str, str] = {}
    for policy, misfire in POLICIES.items():
        for i in range(TASKS_PER_POLICY):
            task_id = await scenario.noop_task(
                f"{policy}-{i}", schedule={"interval_seconds": 2}, misfire=misfire
            )
            policy_of[task_id] = policy
    first = cluster.dispatcher("d1")

    async def fired_at_least(count: int, after: datetime | None = None) -> bool:
        for task_id in policy_of:
            fired = [
                d
                for d in await _decisions(scenario, task_id)
                if d.run_id is not None and (after is None or d.slot > after)
            ]
            if len(fired) < count:
                return False
        return True

    await eventually(lambda: fired_at_least(2), timeout=60, interval=0.5)
    boundary = _next_boundary(time.time())
    await asyncio.sleep(boundary - time.time() + 0.015)
    first.signal(signal.SIGKILL)
    killed_at = datetime.fromtimestamp(time.time(), UTC)
    await first.wait(10)
    await asyncio.sleep(OUTAGE_INTERVALS * INTERVAL.total_seconds())
    restarted_at = datetime.fromtimestamp(time.time(), UTC)
    second = cluster.dispatcher("d2")
    await eventually(lambda: fired_at_least(3, after=restarted_at), timeout=60, interval=0.5)
    second.signal(signal.SIGTERM)
    assert await second.wait(30) == 0

    outage = _slots_from(killed_at, restarted_at)
    assert len(outage) >= OUTAGE_INTERVALS
    #: policy -> (late slots of the outage, how many of them fired, how many misfired), per task
    outcomes: dict[str, set[tuple[int, int, int]]] = defaultdict(set)
    runs = {run.id: run for run in await scenario.all_runs()}
    for task_id, policy in policy_of.items():
        decisions = await _decisions(scenario, task_id)
        slots = [d.slot for d in decisions]
        # One decision per slot, none missing between the first and the last.
        assert slots == list(_slots_from(slots[0] - timedelta(microseconds=1), slots[-1]))
        task_runs = [r for r in runs.values() if r.task_id == task_id]
        assert sorted(r.scheduled_for for r in task_runs) == [
            d.slot for d in decisions if d.run_id is not None
        ]
        for decision in decisions:
            if decision.run_id is None:
                assert decision.reason is SkipReason.MISFIRE, (policy, decision)
                assert decision.detail["misfire"] == POLICIES[policy]["policy"]
            else:
                assert runs[decision.run_id].scheduled_for == decision.slot
        ticks: dict[datetime, list[SlotDecision]] = defaultdict(list)
        for decision in decisions:
            ticks[decision.at].append(decision)
        for at, seen in ticks.items():
            late = [d.slot for d in seen if at - d.slot > GRACE]
            on_time = [d.slot for d in seen if at - d.slot <= GRACE]
            fired = [d.slot for d in seen if d.run_id is not None]
            assert fired == _expected_fire(policy, late, on_time), (policy, at, seen)
        # The killed tick decides the next slot ahead of it (fire-ahead): whether its commit beat
        # the kill is a race, so at most that one outage slot may be the first dispatcher's,
        # decided before the kill. All the others were decided together, by the restarted
        # dispatcher's first tick.
        in_outage = [d for d in decisions if d.slot in outage]
        before_kill = [d for d in in_outage if d.at < killed_at]
        assert [d.slot for d in before_kill] in ([], outage[:1]), (policy, in_outage)
        [outage_tick] = {d.at for d in in_outage if d not in before_kill}
        assert outage_tick > restarted_at
        late_in_outage = [
            d for d in in_outage if d not in before_kill and outage_tick - d.slot > GRACE
        ]
        assert len(late_in_outage) >= OUTAGE_INTERVALS - 1 - len(before_kill)
        fired = sum(1 for d in late_in_outage if d.run_id is not None)
        outcomes[policy].add((len(late_in_outage), fired, len(late_in_outage) - fired))
    assert {fired for _, fired, _ in outcomes["skip"]} == {0}
    assert {fired for _, fired, _ in outcomes["run_once"]} <= {0, 1}
    assert {fired for _, fired, _ in outcomes["catch_up_cap3"]} == {3}
    assert all(fired == late for late, fired, _ in outcomes["catch_up"])


def _slots_from(after: datetime, until: datetime) -> list[datetime]:
    """The every-2-s slots (anchored at the epoch) in ``(after, until]``."""
    slot = datetime.fromtimestamp(_next_boundary(after.timestamp()), UTC)
    found = []
    while slot <= until:
        found.append(slot)
        slot += INTERVAL
    return found


# -- fire-ahead on a broker: the dispatcher holding the messages is killed before the slot ------


@pytest.mark.rabbitmq
@pytest.mark.timeout(120)
async def test_runs_fired_ahead_by_a_killed_dispatcher_start_soon_after_their_slot(
    cluster_factory: Any, scenario: Scenario
) -> None:
    """RabbitMQ cannot hold a message back: the dispatcher that fired a slot ahead holds it
    and publishes it at the slot. Killed with kill -9 before that, it takes the messages with
    it; the runs are queued in the database, and another dispatcher publishes them again a few
    seconds after their slot (runs fired ahead still queued past it), not after the usual
    staleness of queued runs (60 s here). Each runs exactly once, none before its slot."""
    cluster: Cluster = cluster_factory("rabbitmq")
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=9)
    task_ids = [
        await scenario.noop_task(f"at-slot-{i}", schedule={"at": slot.isoformat()})
        for i in range(20)
    ]
    timing = {
        "SCHEDULER__DISPATCHER__FIRE_AHEAD_SECONDS": "6",
        "SCHEDULER__DISPATCHER__REQUEUE_AFTER_SECONDS": "60",
    }
    holder = cluster.dispatcher("d1", **timing)

    async def all_queued() -> bool:
        runs = await scenario.all_runs()
        return len(runs) == len(task_ids) and all(r.status.value == "queued" for r in runs)

    await eventually(all_queued, timeout=30, interval=0.2)
    assert datetime.now(UTC) < slot - timedelta(seconds=1)
    holder.signal(signal.SIGKILL)
    await holder.wait(10)
    cluster.dispatcher("d2", **timing)
    cluster.worker("w1", SCHEDULER__WORKER__CAPACITY="8")

    async def all_succeeded() -> bool:
        runs = await scenario.all_runs()
        return len(runs) == len(task_ids) and all(r.status.value == "succeeded" for r in runs)

    await eventually(all_succeeded, timeout=45, interval=0.5)
    runs = await scenario.all_runs()
    assert sorted(r.task_id for r in runs) == sorted(task_ids)
    for run in runs:
        assert run.scheduled_for == slot
        assert run.started_at is not None
        assert slot <= run.started_at < slot + timedelta(seconds=20), run.started_at - slot
        running = [e for e in await scenario.events(run.id) if e.to_status.value == "running"]
        assert len(running) == 1
