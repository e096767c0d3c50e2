"""Dependencies end to end: a 3-level DAG (fan-out, fan-in) run by a real worker runtime, with
the scheduler loop firing the root, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from dispatcher_stack import OWNER, DispatcherStack, dispatcher_stack, running_worker

from scheduler_domain.events import SkipReason, SlotOutcome
from scheduler_domain.run import RunTrigger
from scheduler_domain.schedules import format_instant
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(90)

NOOP = {"executor": "noop", "params": {}}


async def build_dag(stack: DispatcherStack, *, root_schedule: dict[str, str]) -> dict[str, str]:
    """root -> (left, middle, right) -> join(left, right) ; middle -> tail."""
    ids: dict[str, str] = {}
    ids["root"] = await stack.create_task("root", schedule=root_schedule, **NOOP)
    for name in ("left", "middle", "right"):
        ids[name] = await stack.create_task(name, depends_on=[ids["root"]], **NOOP)
    ids["join"] = await stack.create_task("join", depends_on=[ids["left"], ids["right"]], **NOOP)
    ids["tail"] = await stack.create_task("tail", depends_on=[ids["middle"]], **NOOP)
    return ids


async def test_a_three_level_dag_runs_each_node_once_per_logical_time(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    async with dispatcher_stack(uow_factory) as stack:
        fire_at = stack.clock.now() + timedelta(seconds=1)
        ids = await build_dag(stack, root_schedule={"at": format_instant(fire_at)})
        async with running_worker(stack.worker()):
            manual = await stack.runs.trigger(ids["root"], principal=OWNER)
            logical_times = {fire_at, manual.scheduled_for}

            async def all_done() -> bool:
                for task_id in ids.values():
                    runs = await stack.runs_of(task_id)
                    if len(runs) < 2 or not all(r.status.is_final for r in runs):
                        return False
                return True

            await stack.wait_for(all_done, within=30)
            await asyncio.sleep(0.5)  # long enough for a duplicate to show up, if any

        for name, task_id in ids.items():
            runs = await stack.runs_of(task_id)
            assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 2, name
            assert {r.scheduled_for for r in runs} == logical_times, name
            if name != "root":
                assert {r.trigger for r in runs} == {RunTrigger.DEPENDENCY}, name
        [scheduled] = [
            r for r in await stack.runs_of(ids["root"]) if r.trigger is RunTrigger.SCHEDULE
        ]
        assert scheduled.scheduled_for == fire_at
        preview = await stack.tasks.schedule_preview(ids["join"], principal=OWNER)
        fired = [d for d in preview.recent_decisions if d.outcome is SlotOutcome.FIRED]
        assert {d.slot for d in fired} == logical_times


async def test_a_failed_node_skips_its_branch_and_the_skip_propagates(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    async with dispatcher_stack(uow_factory) as stack:
        root = await stack.create_task("root", **NOOP)
        bad = await stack.create_task(
            "bad", depends_on=[root], executor="noop", params={"fail": True}
        )
        good = await stack.create_task("good", depends_on=[root], **NOOP)
        join = await stack.create_task("join", depends_on=[bad, good], **NOOP)
        after = await stack.create_task("after", depends_on=[join], **NOOP)
        cleanup = await stack.create_task(
            "cleanup", depends_on=[join], trigger_rule="all_done", **NOOP
        )
        async with running_worker(stack.worker()):
            run = await stack.runs.trigger(root, principal=OWNER)

            async def cleanup_ran() -> bool:
                runs = await stack.runs_of(cleanup)
                return bool(runs) and runs[0].status.is_final

            await stack.wait_for(cleanup_ran, within=30)

        assert [r.status for r in await stack.runs_of(bad)] == [RunStatus.DEAD_LETTERED]
        assert [r.status for r in await stack.runs_of(good)] == [RunStatus.SUCCEEDED]
        for skipped_id in (join, after):
            assert await stack.runs_of(skipped_id) == []
            preview = await stack.tasks.schedule_preview(skipped_id, principal=OWNER)
            [decision] = preview.recent_decisions
            assert (decision.reason, decision.slot) == (
                SkipReason.DEPENDENCY_FAILED,
                run.scheduled_for,
            )
        assert [r.status for r in await stack.runs_of(cleanup)] == [RunStatus.SUCCEEDED]


async def test_a_hand_started_upstream_completes_the_fan_in_of_its_logical_time(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    async with dispatcher_stack(uow_factory) as stack:
        fire_at = stack.clock.now() + timedelta(seconds=1)
        scheduled = await stack.create_task(
            "scheduled", schedule={"at": format_instant(fire_at)}, **NOOP
        )
        by_hand = await stack.create_task("by-hand", **NOOP)
        join = await stack.create_task("join", depends_on=[scheduled, by_hand], **NOOP)
        async with running_worker(stack.worker()):

            async def ran(task_id: str) -> bool:
                runs = await stack.runs_of(task_id)
                return bool(runs) and all(r.status.is_final for r in runs)

            await stack.wait_for(lambda: ran(scheduled), within=30)
            now = await stack.runs.trigger(by_hand, principal=OWNER)  # another logical time
            await stack.wait_for(lambda: ran(by_hand), within=30)
            await stack.runs.trigger(by_hand, principal=OWNER, logical_time=fire_at)
            await stack.wait_for(lambda: ran(join), within=30)
            await asyncio.sleep(0.5)  # long enough for a run for the other time, if any

        [joined] = await stack.runs_of(join)
        assert (joined.status, joined.scheduled_for) == (RunStatus.SUCCEEDED, fire_at)
        assert joined.trigger is RunTrigger.DEPENDENCY
        assert {r.scheduled_for for r in await stack.runs_of(by_hand)} == {
            now.scheduled_for,
            fire_at,
        }
