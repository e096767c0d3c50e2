"""Single triggers group-committed: concurrent ``POST /tasks/{id}/trigger`` share a transaction.

Each request still triggers one run and gets one answer, but the API process hands its trigger
to a :class:`~scheduler_application.group_commit.GroupCommit`: a trigger arriving while no
group is being written goes at once (an idle API adds no wait) — unless it comes right after
a group of several, when it waits for as many, at most as long as that group took — and those
arriving while one is written go together in the next, through
:meth:`BatchTrigger.trigger_each` — one unit of work, one read of the tasks, the gates once,
one insert of the runs and their events, one commit, then one publish. So the cost per
trigger falls as the load rises.

Every guarantee of the single trigger holds per request. The answer comes after the commit
that made the run durable, and the run's message is published only after that commit (the
outbox). Gates and rate limits see the group's runs together, as they see a batch. Two
requests with one idempotency key in one group get one run (the second as a replay). A
request's refusal (not found, bad input, conflict) is its own answer, never its neighbours':
and when the group's transaction fails for a reason no item was refused for, the items are
tried again one by one, so only the one that fails alone fails — unless the database is
unavailable, which no retry mends. A request makes at most one run: the items are retried only
when the group was rolled back, never after its commit took or may have taken
(:meth:`BatchTrigger.trigger_each` answers the runs of a commit followed by a failure, and turns
a commit that failed without a reply into ``Unavailable``, which every caller gets).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler_application.accounts.access import Principal, ensure_can_write_tasks
from scheduler_application.errors import Contended, Unavailable
from scheduler_application.group_commit import GroupCommit
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.tracing import NO_TRACER, Tracer
from scheduler_application.runs.batch_trigger import BatchTrigger, TriggerItem, TriggerOutcome
from scheduler_application.runs.service import logical_time_of, stored_key
from scheduler_domain.run import TaskRun


@dataclass(frozen=True, slots=True)
class Triggered:
    """The run a trigger answered with, and whether it existed already (its key's replay)."""

    run: TaskRun
    replayed: bool


class TriggerGroup:
    """The process's group commit of single triggers; close it (:meth:`aclose`) on shutdown so
    that the groups under way finish."""

    def __init__(
        self,
        *,
        batch: BatchTrigger,
        clock: Clock,
        tracer: Tracer = NO_TRACER,
        max_group: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_group``: the most triggers one transaction carries (default: the batch's
        ``max_items``, the most a ``/runs/batch`` request may carry); ``monotonic``: the
        group commit's clock (seconds), for tests."""
        self._batch = batch
        self._clock = clock
        self._tracer = tracer
        # Clients that wait for their answers come back together: a group right after a
        # flush of several waits for as many (at most that flush's time), so that they share
        # one transaction instead of the first going alone (see ``GroupCommit``).
        self._group: GroupCommit[tuple[Principal, TriggerItem], TriggerOutcome] = GroupCommit(
            self._flush, max_batch=max_group or batch.max_items, follow_last=True, clock=monotonic
        )

    @property
    def groups(self) -> int:
        """Transactions written so far (for tests and metrics)."""
        return self._group.flushes

    async def trigger(
        self,
        task_id: str,
        *,
        principal: Principal,
        idempotency_key: str | None = None,
        logical_time: datetime | None = None,
        params: dict[str, Any] | None = None,
    ) -> Triggered:
        """What :meth:`RunService.trigger` does, sharing the transaction with the triggers
        that arrive meanwhile; raises what it raises (NotFound, Conflict, ValidationError,
        PermissionDenied) for this request alone."""
        ensure_can_write_tasks(principal)
        # Bad input is answered before it joins a group (the group would refuse it too).
        stored_key(idempotency_key)
        if logical_time is not None:
            logical_time_of(logical_time, now=self._clock.now())
        with self._tracer.span("run.trigger", attributes={"scheduler.task_id": task_id}):
            item = TriggerItem(
                task_id=task_id,
                idempotency_key=idempotency_key,
                logical_time=logical_time,
                params=params,
                traceparent=self._tracer.current_traceparent(),
            )
            outcome = await self._group.submit((principal, item))
        if outcome.run is None:
            if outcome.error is not None:
                raise outcome.error
            raise RuntimeError(f"trigger refused without a reason: {outcome}")
        return Triggered(outcome.run, replayed=outcome.status == "replayed")

    async def _flush(
        self, entries: list[tuple[Principal, TriggerItem]]
    ) -> list[TriggerOutcome | BaseException]:
        principals = [principal for principal, _ in entries]
        items = [item for _, item in entries]
        try:
            return list(await self._batch.trigger_each(principals, items))
        except Unavailable:
            raise  # every caller gets it: the next request finds out again on its own
        except Exception as error:
            if len(entries) == 1 and not isinstance(error, Contended):
                return [error]
        # Something no item was refused for failed the group (and rolled it back), or the group
        # lost a race (``Contended``: a deadlock PostgreSQL broke, nothing written): find the
        # culprit by trying each on its own; the others are written as if alone.
        return [await self._alone(principal, item) for principal, item in entries]

    async def _alone(
        self, principal: Principal, item: TriggerItem
    ) -> TriggerOutcome | BaseException:
        """One item in a transaction of its own, its error answered; one that loses a race
        again (nothing written) is tried once more."""
        answer = await self._answered(principal, item)
        if isinstance(answer, Contended):
            answer = await self._answered(principal, item)
        return answer

    async def _answered(
        self, principal: Principal, item: TriggerItem
    ) -> TriggerOutcome | BaseException:
        try:
            [answer] = await self._batch.trigger_each([principal], [item])
        except Exception as error:
            return error
        return answer

    async def aclose(self) -> None:
        await self._group.aclose()
