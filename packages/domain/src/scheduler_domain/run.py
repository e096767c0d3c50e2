"""The TaskRun: one attempt of one task, moved only along the transition table.

Every transition method returns the :class:`RunEvent` that records it; the caller stores the
event in the same transaction as the run. Transitions that change ownership of the attempt
(claim, outcome, loss, cancellation) bump ``version``, which doubles as the fencing token: a
worker presents the token it got at claim time, and once the attempt has moved on any older
token is refused.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from scheduler_domain.clock import ensure_utc
from scheduler_domain.errors import LeaseLost, StaleFencingToken, ValidationError
from scheduler_domain.events import RunEvent
from scheduler_domain.ids import new_id
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.status import FAILURE_STATUSES, RunStatus, ensure_transition
from scheduler_domain.task import Task

MAX_ERROR_CHARS = 8_192


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    DEPENDENCY = "dependency"
    RETRY = "retry"


@dataclass(slots=True, kw_only=True)
class TaskRun:
    task_id: str
    owner_id: str
    trigger: RunTrigger
    scheduled_for: datetime
    created_at: datetime
    attempt: int = 1
    retry_of: str | None = None
    idempotency_key: str | None = None
    status: RunStatus = RunStatus.PENDING
    queue: str = "default"
    priority: int = 5
    not_before: datetime | None = None
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    output: str | None = None
    traceparent: str | None = None
    #: The template (and its version) of the task when the run was created, for a task made
    #: from one.
    template_id: str | None = None
    template_version: int | None = None
    #: The executor params this run executes with, fixed when it was created: a template
    #: task's (rendered from the template version above), or a trigger's given ``params``
    #: merged over the task's. None: the task's params as they are at execution.
    params: dict[str, Any] | None = None
    #: The parameters this run was given, as the user wrote them: a trigger's ``params``
    #: merged over the task's (a template task's: over its subscription's parameters).
    run_params: dict[str, Any] | None = None
    version: int = 1
    id: str = field(default_factory=new_id)
    #: The task's team (who may see the run); empty means the owner's personal team.
    team_id: str = ""

    @classmethod
    def create(
        cls,
        task: Task,
        *,
        trigger: RunTrigger,
        logical_time: datetime,
        now: datetime,
        idempotency_key: str | None = None,
        not_before: datetime | None = None,
        traceparent: str | None = None,
        params: dict[str, Any] | None = None,
        run_params: dict[str, Any] | None = None,
    ) -> TaskRun:
        """The first attempt of ``task`` for ``logical_time`` (its ``scheduled_for``),
        ``pending``: owned by the task's owner, in the task's queue at its priority. Every path
        that creates a run (a trigger, a slot, a dependency) builds it here; a further attempt
        is :meth:`new_attempt`.

        A template task's run fixes its executor params (and the template version they came
        from) now; ``params``/``run_params`` are a trigger's merged parameters, when given."""
        if params is None and task.template_id is not None:
            params = dict(task.params)
        if run_params is None and task.template_params is not None:
            run_params = dict(task.template_params)
        return cls(
            task_id=task.id,
            owner_id=task.owner_id,
            team_id=task.team_id,
            trigger=trigger,
            scheduled_for=logical_time,
            created_at=now,
            idempotency_key=idempotency_key,
            queue=task.queue,
            priority=task.priority,
            not_before=not_before,
            traceparent=traceparent,
            template_id=task.template_id,
            template_version=task.template_version,
            params=params,
            run_params=run_params,
        )

    def new_attempt(
        self,
        *,
        attempt: int,
        now: datetime,
        task: Task | None = None,
        idempotency_key: str | None = None,
        not_before: datetime | None = None,
    ) -> TaskRun:
        """A further attempt of this run (trigger ``retry``), ``pending``, for the same logical
        time and in the same trace: in ``task``'s queue at its priority when given (a retry by
        hand follows the task as it is now), else in this run's."""
        return TaskRun(
            task_id=self.task_id,
            owner_id=self.owner_id,
            team_id=task.team_id if task is not None else self.team_id,
            trigger=RunTrigger.RETRY,
            scheduled_for=self.scheduled_for,
            created_at=now,
            attempt=attempt,
            retry_of=self.id,
            idempotency_key=idempotency_key,
            queue=task.queue if task is not None else self.queue,
            priority=task.priority if task is not None else self.priority,
            not_before=not_before,
            traceparent=self.traceparent,
            template_id=self.template_id,
            template_version=self.template_version,
            params=None if self.params is None else dict(self.params),
            run_params=None if self.run_params is None else dict(self.run_params),
        )

    def __post_init__(self) -> None:
        if self.attempt < 1:
            raise ValidationError("attempt starts at 1", field="attempt")
        if not self.team_id:
            self.team_id = self.owner_id
        self.scheduled_for = ensure_utc(self.scheduled_for, field="scheduled_for")
        self.created_at = ensure_utc(self.created_at, field="created_at")

    # -- transitions ---------------------------------------------------------------------------

    def _move(
        self, target: RunStatus, *, now: datetime, actor: str, detail: dict[str, Any] | None = None
    ) -> RunEvent:
        ensure_transition(self.status, target)
        previous = self.status
        self.status = target
        return RunEvent(
            run_id=self.id,
            task_id=self.task_id,
            from_status=previous,
            to_status=target,
            at=now,
            actor=actor,
            detail=detail or {},
        )

    def mark_queued(self, *, now: datetime, actor: str = "dispatcher") -> RunEvent:
        event = self._move(RunStatus.QUEUED, now=now, actor=actor, detail={"queue": self.queue})
        self.queued_at = now
        return event

    def unqueue(self, *, now: datetime, actor: str, reason: str) -> RunEvent:
        """Back to ``pending``, unpublished: its queue was paused before a worker took it. A
        message that still names it finds it not ``queued`` and is dropped; the relay publishes
        it again once the queue is resumed."""
        event = self._move(
            RunStatus.PENDING, now=now, actor=actor, detail={"reason": reason, "queue": self.queue}
        )
        self.queued_at = None
        return event

    def claim(self, *, worker_id: str, now: datetime, lease: timedelta) -> RunEvent:
        """Give the attempt to ``worker_id`` under a lease; the new ``version`` is its token.

        The one definition of the claim: the repositories' single-statement claims write the
        same :func:`claim_changes` (plus ``status`` and ``version + 1``), and a run they return
        running gives its record with :meth:`claim_event`."""
        ensure_transition(self.status, RunStatus.RUNNING)
        self.status = RunStatus.RUNNING
        for name, value in claim_changes(worker_id=worker_id, now=now, lease=lease).items():
            setattr(self, name, value)
        self.version += 1
        return self.claim_event()

    def claim_event(self) -> RunEvent:
        """The queued → running record of this run's claim (by :meth:`claim`, or by a
        repository's claim statement that returned the row running)."""
        actor, detail = claim_event_fields(self.worker_id or "")
        return RunEvent(
            run_id=self.id,
            task_id=self.task_id,
            from_status=RunStatus.QUEUED,
            to_status=RunStatus.RUNNING,
            at=self.started_at or self.created_at,
            actor=actor,
            detail=detail,
        )

    def check_token(self, token: int) -> None:
        if token != self.version:
            raise StaleFencingToken(expected=self.version, got=token)

    def heartbeat(self, *, token: int, now: datetime, lease: timedelta) -> None:
        """Extend the lease of a running attempt; refused for a stale token or a finished run."""
        self.check_token(token)
        if self.status is not RunStatus.RUNNING:
            raise LeaseLost(f"run {self.id} is {self.status.value}, not running")
        self.heartbeat_at = now
        self.lease_expires_at = now + lease

    def finish(
        self,
        target: RunStatus,
        *,
        token: int,
        now: datetime,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        output: str | None = None,
    ) -> RunEvent:
        """Record the outcome a worker reports: succeeded, failed or timed_out."""
        if target not in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT):
            raise ValidationError(f"{target.value!r} is not an outcome", field="status")
        self.check_token(token)
        detail: dict[str, Any] = {}
        if error:
            detail["error"] = error[:500]
        event = self._move(target, now=now, actor=f"worker:{self.worker_id}", detail=detail)
        self._close(now)
        self.result = result
        self.error = error[:MAX_ERROR_CHARS] if error else None
        self.output = output
        return event

    def lose(self, *, now: datetime, reason: str = "lease expired") -> RunEvent:
        """The worker stopped renewing its lease: the attempt is lost (the reaper calls this)."""
        event = self._move(
            RunStatus.LOST,
            now=now,
            actor="reaper",
            detail={"reason": reason, "worker_id": self.worker_id},
        )
        self._close(now)
        self.error = reason
        return event

    def cancel(self, *, now: datetime, actor: str, reason: str = "cancelled") -> RunEvent:
        event = self._move(RunStatus.CANCELLED, now=now, actor=actor, detail={"reason": reason})
        self._close(now)
        self.error = reason
        return event

    def dead_letter(self, *, now: datetime, actor: str = "system") -> RunEvent:
        """A failed attempt with no attempts left: kept, listable and re-triggerable."""
        previous = self.status
        event = self._move(
            RunStatus.DEAD_LETTERED,
            now=now,
            actor=actor,
            detail={"final_status": previous.value, "attempt": self.attempt},
        )
        self.version += 1
        return event

    def _close(self, now: datetime) -> None:
        self.finished_at = now
        self.lease_expires_at = None
        self.version += 1

    # -- retries ---------------------------------------------------------------------------------

    @property
    def failed_attempt(self) -> bool:
        return self.status in FAILURE_STATUSES

    def next_attempt(
        self, *, policy: RetryPolicy, now: datetime, rng: random.Random | None = None
    ) -> TaskRun | None:
        """The retry of a failed attempt, pending until its backoff has passed, or None if the
        policy has no attempts left (the caller then dead-letters this run)."""
        if not self.failed_attempt:
            raise ValidationError(
                f"only a failed attempt can be retried, not a {self.status.value!r} one",
                field="status",
            )
        if not policy.has_attempts_left(self.attempt):
            return None
        return self.new_attempt(
            attempt=self.attempt + 1,
            now=now,
            idempotency_key=f"retry:{self.id}",
            not_before=now + policy.backoff(self.attempt, rng=rng),
        )

    def is_lease_expired(self, now: datetime) -> bool:
        return (
            self.status is RunStatus.RUNNING
            and self.lease_expires_at is not None
            and self.lease_expires_at <= now
        )

    def __copy__(self) -> TaskRun:
        """``copy.copy``, field by field (a test checks that every field is): the gates copy
        every run they pass, and the generic ``__reduce_ex__`` copy of a slots class cost ten
        times as much — a tenth of a batch trigger's CPU in the API."""
        new = TaskRun.__new__(TaskRun)
        new.task_id = self.task_id
        new.owner_id = self.owner_id
        new.trigger = self.trigger
        new.scheduled_for = self.scheduled_for
        new.created_at = self.created_at
        new.attempt = self.attempt
        new.retry_of = self.retry_of
        new.idempotency_key = self.idempotency_key
        new.status = self.status
        new.queue = self.queue
        new.priority = self.priority
        new.not_before = self.not_before
        new.worker_id = self.worker_id
        new.lease_expires_at = self.lease_expires_at
        new.heartbeat_at = self.heartbeat_at
        new.queued_at = self.queued_at
        new.started_at = self.started_at
        new.finished_at = self.finished_at
        new.result = self.result
        new.error = self.error
        new.output = self.output
        new.traceparent = self.traceparent
        new.template_id = self.template_id
        new.template_version = self.template_version
        new.params = self.params
        new.run_params = self.run_params
        new.version = self.version
        new.id = self.id
        new.team_id = self.team_id
        return new

    def created_event(self, *, actor: str) -> RunEvent:
        """The first event of every run: its creation, with why it exists."""
        return RunEvent(
            run_id=self.id,
            task_id=self.task_id,
            from_status=None,
            to_status=self.status,
            at=self.created_at,
            actor=actor,
            detail={"trigger": self.trigger.value, "attempt": self.attempt},
        )


def claim_event_fields(worker_id: str) -> tuple[str, dict[str, Any]]:
    """The actor and detail of a claim's event (:meth:`TaskRun.claim_event`), for a repository
    that writes the event in its claim statement."""
    return f"worker:{worker_id}", {"worker_id": worker_id}


def claim_changes(*, worker_id: str, now: datetime, lease: timedelta) -> dict[str, Any]:
    """The fields a claim sets besides ``status`` (→ running) and ``version`` (+ 1): the
    attempt is the worker's from ``now``, its lease ends at ``now + lease``."""
    return {
        "worker_id": worker_id,
        "started_at": now,
        "heartbeat_at": now,
        "lease_expires_at": now + lease,
    }
