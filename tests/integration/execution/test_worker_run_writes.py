"""A worker writes its running runs one statement at a time: a batch of outcomes, a lease
renewal and a live output report never run at once. On two connections, two of them over the
same runs could each lock one the other waits for — PostgreSQL then fails one after a second
(a deadlock; CI once lost a batch of outcomes to one). Run on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import wraps
from typing import Any

import pytest
from execution_stack import OWNER, PYTHON, Stack, running

from scheduler_application.execution.service import ExecutionService
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(90)

RUNS = 120
#: Prints a line, then holds the run a little: live output is in hand, leases need renewing.
PRINTS = "import time\nprint('line', flush=True)\ntime.sleep(0.3)\n"


class Overlaps:
    """Counts the worker's writes of its running runs in progress, and the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.calls: dict[str, int] = {}

    def watch(self, name: str, method: Callable[..., Awaitable[Any]]) -> Any:
        @wraps(method)
        async def watched(*args: Any, **kwargs: Any) -> Any:
            self.now += 1
            self.most = max(self.most, self.now)
            self.calls[name] = self.calls.get(name, 0) + 1
            try:
                return await method(*args, **kwargs)
            finally:
                self.now -= 1

        return watched


async def test_outcomes_renewals_and_output_reports_never_overlap(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlaps = Overlaps()
    for name in ("complete_many", "heartbeat", "report_output"):
        monkeypatch.setattr(
            ExecutionService, name, overlaps.watch(name, getattr(ExecutionService, name))
        )
    quick = await stack.create_task(name="quick", executor="noop", params={})
    slow = await stack.create_task(
        name="prints", executor="shell", params={"argv": [PYTHON, "-c", PRINTS]}
    )
    worker = stack.worker(
        capacity=8,
        heartbeat_interval=timedelta(seconds=0.01),
        live_output_interval=timedelta(seconds=0.01),
    )
    async with running(worker):
        triggered = [await stack.trigger(slow if i % 10 == 0 else quick) for i in range(RUNS)]

        async def all_done() -> bool:
            for run in triggered:
                if (
                    await stack.runs.get(run.id, principal=OWNER)
                ).status is not RunStatus.SUCCEEDED:
                    return False
            return True

        await stack.wait_for(all_done, timeout=60)
    # Each kind of write happened, many times, while the others were due.
    assert overlaps.calls["complete_many"] > 1
    assert overlaps.calls["heartbeat"] > 10
    assert overlaps.calls["report_output"] > 0
    assert overlaps.most == 1
