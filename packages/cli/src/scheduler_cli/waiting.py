"""Waiting for a run to end: poll it, follow its automatic retries, and say how it ended as an
exit code (0 succeeded, 1 failed/timed_out/lost/dead_lettered, 2 cancelled, 124 still going
when ``--timeout`` ran out).

The API has no push for run changes, so this polls: quickly right after a change (most runs
move on within a second), then backing off to ``interval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler_cli.client import ApiClient
from scheduler_cli.errors import CliError

Run = dict[str, Any]

OUTCOME_EXIT_CODES = {
    "succeeded": 0,
    "failed": 1,
    "timed_out": 1,
    "lost": 1,
    "dead_lettered": 1,
    "cancelled": 2,
}
FINAL_STATUSES = frozenset(OUTCOME_EXIT_CODES)
#: An attempt that ended like this has either a retry (created in the same transaction) or was
#: dead-lettered instead.
RETRIED_STATUSES = frozenset({"failed", "timed_out", "lost"})
#: Like timeout(1): the run had not ended when --timeout ran out.
WAIT_TIMED_OUT = 124
FIRST_DELAY_SECONDS = 0.2


class WaitTimedOut(CliError):
    exit_code = WAIT_TIMED_OUT

    def __init__(self, run: Run, timeout: float) -> None:
        super().__init__(f"run {run['id']} is still {run['status']} after {timeout:g}s (--timeout)")
        self.run = run


def exit_code(run: Run) -> int:
    return OUTCOME_EXIT_CODES.get(str(run.get("status")), 1)


def is_final(run: Run) -> bool:
    return run.get("status") in FINAL_STATUSES


@dataclass(kw_only=True)
class RunWatcher:
    client: ApiClient
    interval: float = 1.0
    timeout: float | None = None
    follow_retries: bool = True
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def wait(self, run: Run | str, *, on_poll: Callable[[Run], None] | None = None) -> Run:
        """The run (or its last retry) once it has ended; ``on_poll`` sees every state fetched.
        Raises WaitTimedOut when ``timeout`` seconds pass first."""
        current: Run = self.client.get(f"/runs/{run}") if isinstance(run, str) else run
        deadline = None if self.timeout is None else self.clock() + self.timeout
        delay = FIRST_DELAY_SECONDS
        while True:
            if on_poll is not None:
                on_poll(current)
            if is_final(current):
                retry = self.retry_of(current) if self.follow_retries else None
                if retry is None:
                    return current
                current, delay = retry, FIRST_DELAY_SECONDS
                continue
            remaining = None if deadline is None else deadline - self.clock()
            if remaining is not None and remaining <= 0:
                raise WaitTimedOut(current, self.timeout or 0.0)
            self.sleep(delay if remaining is None else min(delay, remaining))
            previous = current.get("status")
            current = self.client.get(f"/runs/{current['id']}")
            changed = current.get("status") != previous
            delay = FIRST_DELAY_SECONDS if changed else min(delay * 2, max(self.interval, 0.05))

    def retry_of(self, run: Run) -> Run | None:
        """The automatic retry of a failed attempt, if its task's policy granted one."""
        if run.get("status") not in RETRIED_STATUSES:
            return None
        candidates = self.client.items(
            "/runs",
            task_id=run["task_id"],
            trigger="retry",
            created_after=run["created_at"],
            limit=100,
        )
        return next((r for r in candidates if r.get("retry_of") == run["id"]), None)
