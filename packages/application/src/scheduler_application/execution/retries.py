"""What happens to an attempt that failed, timed out or was lost: a retry, or the dead letters.

Shared by the outcome a worker reports, the reaper and a draining worker's release, so the
rule is written once. The caller persists ``run`` (its version moved) and commits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.events import RunEvent
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task


@dataclass(frozen=True, slots=True)
class Settlement:
    """The attempt as it ended, and its retry if the policy grants one."""

    run: TaskRun
    retry: TaskRun | None

    @property
    def dead_lettered(self) -> bool:
        return self.run.status is RunStatus.DEAD_LETTERED


async def settle_failed_attempt(
    uow: UnitOfWork,
    run: TaskRun,
    *,
    task: Task | None,
    now: datetime,
    actor: str,
    rng: random.Random | None = None,
    delay: timedelta | None = None,
) -> TaskRun | None:
    """Add the next attempt (pending until its backoff, or ``delay`` when given) with its event,
    or dead-letter ``run`` (in memory, with its event) when no attempts are left."""
    retry, event = plan_failed_attempt(run, task=task, now=now, actor=actor, rng=rng, delay=delay)
    if retry is not None:
        await uow.runs.add(retry)
    await uow.events.add(event)
    return retry


def plan_failed_attempt(
    run: TaskRun,
    *,
    task: Task | None,
    now: datetime,
    actor: str,
    rng: random.Random | None = None,
    delay: timedelta | None = None,
) -> tuple[TaskRun | None, RunEvent]:
    """What :func:`settle_failed_attempt` writes, for callers that write in batches: the retry
    (to add before its event) and its creation event, or no retry and the dead-lettering of
    ``run`` (already applied in memory) with its event."""
    policy = task.retry if task is not None else RetryPolicy()
    retry = run.next_attempt(policy=policy, now=now, rng=rng)
    if retry is None:
        return None, run.dead_letter(now=now, actor=actor)
    if delay is not None:
        retry.not_before = now + delay
    if task is not None:
        retry.queue = task.queue
        retry.priority = task.priority
    return retry, retry.created_event(actor=actor)
