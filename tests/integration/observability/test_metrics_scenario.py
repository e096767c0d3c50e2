"""After a scripted scenario every metric has exactly the value the scenario implies.

The scenario runs on the combined stack (API services, every dispatcher loop, a worker, one
registry): successes (manual, scheduled, a dependent), a failure with a retry that ends in the
dead letters, a slot skipped by the ``forbid`` policy, a timeout, a rate-limited run that is
then cancelled, a lease that expires, and a backlog on a queue nobody consumes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from observed_stack import ObservedStack, migrated_sqlite, observed_stack

from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_domain.events import SkipReason
from scheduler_domain.schedules import format_instant

pytestmark = pytest.mark.timeout(90)

NO_RETRY = {"max_attempts": 1}


async def run_scenario(stack: ObservedStack) -> dict[str, str]:
    ids: dict[str, str] = {}
    # Successes: three manual noop runs and one shell run.
    ids["ok"] = await stack.create_task("ok")
    ids["echo"] = await stack.create_task(
        "echo", executor="shell", params={"argv": ["echo", "hello"]}
    )
    for _ in range(3):
        await stack.trigger(ids["ok"])
    await stack.trigger(ids["echo"])

    # A failure with one retry, which fails too: dead-lettered.
    ids["fail"] = await stack.create_task(
        "fail",
        params={"fail": True},
        retry={"max_attempts": 2, "base_delay_seconds": 0, "jitter_seconds": 0},
    )
    await stack.trigger(ids["fail"])

    # A timeout; while it runs, its schedule's slot is skipped by the forbid policy.
    ids["slow"] = await stack.create_task(
        "slow",
        params={"sleep_seconds": 30},
        timeout_seconds=4,
        concurrency="forbid",
        retry=NO_RETRY,
    )
    await stack.trigger(ids["slow"])
    await stack.until(lambda: _has(stack, ids["slow"], "running"))
    due = datetime.now(UTC) + timedelta(milliseconds=300)
    await stack.services.tasks.update(
        ids["slow"], {"schedule": {"at": format_instant(due)}}, principal=_owner()
    )
    await stack.until(lambda: stack.value("scheduler_slots_skipped_total", reason="forbid") == 1)
    assert stack.value("scheduler_worker_active_runs") >= 1

    # A rate limit: the second run is held back an hour, then cancelled.
    ids["limited"] = await stack.create_task("limited", rate_limit="1/h")
    await stack.trigger(ids["limited"])
    await stack.until(lambda: _has(stack, ids["limited"], "succeeded"))
    held = await stack.trigger(ids["limited"])
    await stack.until(lambda: stack.value("scheduler_rate_limited_total") == 1)
    await stack.services.runs.cancel(held.id, principal=_owner())

    # A lease that expires: a worker that claims and then never heartbeats.
    ids["orphan"] = await stack.create_task("orphan", queue="orphan", retry=NO_RETRY)
    orphan = await stack.trigger(ids["orphan"])
    await stack.until(lambda: _has(stack, ids["orphan"], "queued"))
    resources = stack.resources
    ghost = await WorkerService(uow_factory=resources.uow_factory, clock=resources.clock).register(
        RegisterWorker(name="ghost", hostname="ghost", pid=1, queues=("orphan",), capacity=1)
    )
    impatient = ExecutionService(
        uow_factory=resources.uow_factory,
        clock=resources.clock,
        lease=timedelta(seconds=0.5),
        observer=resources.metrics,
        executor_policy=OPEN_EXECUTOR_POLICY,
    )
    assert await impatient.claim(orphan.id, worker_id=ghost.id) is not None

    # A scheduled run and its dependent.
    ids["root"] = await stack.create_task(
        "root", schedule={"at": format_instant(datetime.now(UTC) + timedelta(seconds=0.5))}
    )
    ids["leaf"] = await stack.create_task("leaf", depends_on=[ids["root"]])

    # A backlog nobody consumes.
    ids["backlog"] = await stack.create_task("backlog", queue="backlog")
    for _ in range(3):
        await stack.trigger(ids["backlog"])

    expected = {
        "ok": ["succeeded"] * 3,
        "echo": ["succeeded"],
        "fail": ["dead_lettered", "failed"],
        "slow": ["dead_lettered"],
        "limited": ["succeeded", "cancelled"],
        "orphan": ["dead_lettered"],
        "root": ["succeeded"],
        "leaf": ["succeeded"],
        "backlog": ["queued"] * 3,
    }

    async def settled() -> bool:
        for name, statuses in expected.items():
            if sorted(await stack.statuses(ids[name])) != sorted(statuses):
                return False
        return True

    await stack.until(settled, within=30)
    # The gauges are sampled by a loop: wait for a round that saw the final state.
    await stack.until(
        lambda: (
            stack.value("scheduler_queue_depth", queue="backlog") == 3
            and stack.value("scheduler_workers", status="online") == 2
        )
    )
    return ids


def _owner():  # type: ignore[no-untyped-def]
    from observed_stack import OWNER

    return OWNER


async def _has(stack: ObservedStack, task_id: str, status: str) -> bool:
    return status in await stack.statuses(task_id)


async def test_every_metric_has_the_value_the_scenario_implies(tmp_path: Path) -> None:
    async with observed_stack(await migrated_sqlite(tmp_path / "scenario.db")) as stack:
        await run_scenario(stack)
        v = stack.value

        assert v("scheduler_runs_created_total", trigger="manual") == 12
        assert v("scheduler_runs_created_total", trigger="schedule") == 1
        assert v("scheduler_runs_created_total", trigger="dependency") == 1
        assert v("scheduler_runs_created_total", trigger="retry") == 1

        assert v("scheduler_runs_finished_total", status="succeeded") == 7
        assert v("scheduler_runs_finished_total", status="failed") == 2
        assert v("scheduler_runs_finished_total", status="timed_out") == 1
        assert v("scheduler_runs_finished_total", status="lost") == 1
        assert v("scheduler_runs_finished_total", status="cancelled") == 1

        duration = "scheduler_run_duration_seconds_count"
        assert v(duration, executor="noop", status="succeeded") == 6
        assert v(duration, executor="shell", status="succeeded") == 1
        assert v(duration, executor="noop", status="failed") == 2
        assert v(duration, executor="noop", status="timed_out") == 1
        assert v("scheduler_run_duration_seconds_sum", executor="noop", status="timed_out") >= 3.5

        assert v("scheduler_run_queue_wait_seconds_count") == 11  # every claim
        assert v("scheduler_schedule_lateness_seconds_count") == 1  # root's slot
        assert 0 <= v("scheduler_schedule_lateness_seconds_sum") < 2

        assert v("scheduler_slots_skipped_total", reason="forbid") == 1
        for reason in SkipReason:
            if reason is not SkipReason.FORBID:
                assert v("scheduler_slots_skipped_total", reason=reason.value) == 0, reason

        assert v("scheduler_retries_total") == 1
        assert v("scheduler_dead_lettered_total") == 3  # fail, slow, orphan
        assert v("scheduler_leases_expired_total") == 1
        assert v("scheduler_rate_limited_total") == 1
        for dependency in ("database", "broker", "redis"):
            assert v("scheduler_dependency_unavailable_total", dependency=dependency) == 0

        assert v("scheduler_queue_depth", queue="default") == 0
        assert v("scheduler_queue_depth", queue="backlog") == 3
        assert v("scheduler_queue_depth", queue="orphan") == 1
        assert v("scheduler_workers", status="online") == 2  # the worker and the ghost
        assert v("scheduler_workers", status="draining") == 0
        assert v("scheduler_workers", status="offline") == 0
        assert v("scheduler_worker_active_runs") == 0
