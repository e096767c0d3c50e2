"""Airflow's trigger rules over a real dispatcher and worker: upstreams that succeeded, failed
(dead-lettered) and were skipped, and for each new rule one dependent that runs and one that is
skipped, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from dispatcher_stack import OWNER, dispatcher_stack, running_worker

from scheduler_domain.events import SkipReason, SlotOutcome
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(90)

NOOP = {"executor": "noop", "params": {}}
FAILING = {"executor": "noop", "params": {"fail": True}}


async def test_each_trigger_rule_runs_or_skips_its_dependent_as_airflow_does(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    async with dispatcher_stack(uow_factory) as stack:
        root = await stack.create_task("root", **NOOP)
        good = await stack.create_task("good", depends_on=[root], **NOOP)
        bad = await stack.create_task("bad", depends_on=[root], **FAILING)
        # skipped for the logical time: its only upstream failed
        gone = await stack.create_task("gone", depends_on=[bad], **NOOP)

        async def dependent(name: str, rule: str, *upstreams: str) -> str:
            return await stack.create_task(
                name, depends_on=list(upstreams), trigger_rule=rule, **NOOP
            )

        runs = {
            "all_failed": await dependent("af-run", "all_failed", bad),
            "one_failed": await dependent("of-run", "one_failed", good, bad),
            "none_failed": await dependent("nf-run", "none_failed", good, gone),
            "none_skipped": await dependent("ns-run", "none_skipped", good, bad),
            "always": await dependent("al-run", "always", gone),
        }
        skips = {
            "all_failed": await dependent("af-skip", "all_failed", bad, good),
            "one_failed": await dependent("of-skip", "one_failed", good),
            "none_failed": await dependent("nf-skip", "none_failed", good, bad),
            "none_skipped": await dependent("ns-skip", "none_skipped", good, gone),
        }

        async def skip_of(task_id: str) -> list[SkipReason | None]:
            preview = await stack.tasks.schedule_preview(task_id, principal=OWNER)
            return [d.reason for d in preview.recent_decisions if d.outcome is SlotOutcome.SKIPPED]

        async def all_decided() -> bool:
            for task_id in runs.values():
                ran = await stack.runs_of(task_id)
                if not ran or not ran[0].status.is_final:
                    return False
            return all([await skip_of(task_id) for task_id in skips.values()])

        async with running_worker(stack.worker()):
            await stack.runs.trigger(root, principal=OWNER)
            await stack.wait_for(all_decided, within=30)

        assert [r.status for r in await stack.runs_of(bad)] == [RunStatus.DEAD_LETTERED]
        assert await skip_of(gone) == [SkipReason.DEPENDENCY_FAILED]
        for rule, task_id in runs.items():
            assert [r.status for r in await stack.runs_of(task_id)] == [RunStatus.SUCCEEDED], rule
            assert await skip_of(task_id) == [], rule
        for rule, task_id in skips.items():
            assert await stack.runs_of(task_id) == [], rule
            assert await skip_of(task_id) == [SkipReason.DEPENDENCY_FAILED], rule
