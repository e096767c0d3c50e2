"""No label grows with the work done: 10 runs and 100 runs leave the same series."""

from __future__ import annotations

from pathlib import Path

import pytest
from observed_stack import ObservedStack, migrated_sqlite, observed_stack

pytestmark = pytest.mark.timeout(120)


def scheduler_series(stack: ObservedStack) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in stack.resources.metrics.registry.collect()
        if family.name.startswith("scheduler_")
        for sample in family.samples
    }


async def run_batch(stack: ObservedStack, task_ids: list[str], count: int) -> None:
    for n in range(count):
        await stack.trigger(task_ids[n % len(task_ids)])

    async def done() -> bool:
        total = 0
        for task_id in task_ids:
            total += (await stack.statuses(task_id)).count("succeeded")
        return total >= stack.done + count

    await stack.until(done, within=60)
    stack.done += count
    # One more gauge round, so the gauges reflect the end of the batch.
    await stack.until(lambda: stack.value("scheduler_workers", status="online") == 1)


async def test_series_do_not_grow_with_runs(tmp_path: Path) -> None:
    async with observed_stack(await migrated_sqlite(tmp_path / "labels.db")) as stack:
        task_ids = [await stack.create_task(f"job-{n}") for n in range(5)]
        await run_batch(stack, task_ids, 10)
        after_ten = scheduler_series(stack)
        await run_batch(stack, task_ids, 90)
        after_hundred = scheduler_series(stack)

        assert stack.value("scheduler_runs_finished_total", status="succeeded") == 100
        assert after_hundred == after_ten
        labels = {value for _, pairs in after_hundred for _, value in pairs}
        for task_id in task_ids:
            assert task_id not in labels
