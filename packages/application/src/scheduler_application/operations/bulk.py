"""Operations in bulk: cancel, retry or re-trigger runs, pause, resume or delete tasks — chosen by
ids or by the same filters as the list endpoints — as one bounded job that reports progress.

- **Preview first.** ``count`` answers how many objects a selection matches now (the dry run
  the console and the CLI show before asking for confirmation).
- **Bounded.** A selection by ids holds at most :data:`MAX_IDS`; one by filter may match at most
  ``max_items`` objects (refused with the count otherwise: narrow the filter). A filter over runs
  is frozen at the start: runs created afterwards are not part of it.
- **One job.** ``start`` records a :class:`BulkOperation` and works through the selection in
  batches, in the background of the process that accepted it, recording progress after each
  batch (``done`` of ``total``; succeeded, skipped — e.g. a run already final for a cancel — and
  failed). A job whose process died is taken over, from its last recorded position, by another
  process's :meth:`BulkRunner.resume_orphans` once its heartbeat is stale; every action is safe
  to repeat for the items of the batch that was under way (a cancel of a cancelled run is a
  skip, a retry is skipped once the run has a newer attempt, a re-trigger carries an
  idempotency key of the operation).
- **Answers per item.** For a selection by ids, every item's outcome is kept; for a filter, the
  failures (up to :data:`MAX_KEPT_FAILURES`). Each item goes through the same use case as its
  single call (``RunService.cancel``…), so the same rules, events and authorization apply: the
  operation acts with the principal who started it, on what that principal may see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler_application.accounts.access import (
    Principal,
    change_scope,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
)
from scheduler_application.errors import AlreadyExists, Conflict, NotFound, PermissionDenied
from scheduler_application.operations.bulk_operations import (
    BulkAction,
    BulkOperation,
    BulkStatus,
    Selection,
)
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.repositories import RunFilter, TaskFilter
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError
from scheduler_domain.run import RunTrigger
from scheduler_domain.status import RunStatus

logger = logging.getLogger(__name__)

#: Most ids one selection may list.
MAX_IDS = 1_000
#: Failures a filter operation keeps (its counts cover them all).
MAX_KEPT_FAILURES = 100
BATCH = 200
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str  # "succeeded", "skipped" or "failed"
    detail: str | None = None
    run_id: str | None = None


class BulkService:
    """Start, preview and watch bulk operations (the API's side); :class:`BulkRunner` does
    the work."""

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        runner: BulkRunner,
        max_items: int = 100_000,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._runner = runner
        self._max_items = max_items

    async def count(self, action: BulkAction, selection: Selection, *, principal: Principal) -> int:
        """How many objects ``selection`` matches now, for ``principal`` (the dry run)."""
        ensure_can_write_tasks(principal)
        _check_selection(action, selection)
        if selection.ids is not None:
            return len(selection.ids)
        async with self._uow_factory() as uow:
            return await _count(uow, action, selection, principal, frozen_at=None)

    async def start(
        self, action: BulkAction, selection: Selection, *, principal: Principal
    ) -> BulkOperation:
        ensure_can_write_tasks(principal)
        _check_selection(action, selection)
        now = self._clock.now()
        operation = BulkOperation(
            action=action,
            actor_id=principal.subject_id,
            actor_role=principal.role,
            selection=selection,
            created_at=now,
            heartbeat_at=now,
            frozen_at=now if selection.ids is None else None,
        )
        async with self._uow_factory() as uow:
            if selection.ids is not None:
                operation.total = len(selection.ids)
            else:
                operation.total = await _count(uow, action, selection, principal, frozen_at=now)
                if operation.total > self._max_items:
                    raise ValidationError(
                        f"the filter matches {operation.total} objects; one operation may "
                        f"handle at most {self._max_items}: narrow the filter",
                        field="filter",
                    )
            await uow.bulk_operations.add(operation)
            await uow.commit()
        self._runner.run(operation)
        return operation

    async def get(self, operation_id: str, *, principal: Principal) -> BulkOperation:
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            operation = await uow.bulk_operations.get(operation_id)
        if operation is None or (
            operation.actor_id != principal.subject_id and not principal.role.sees_all_tasks
        ):
            raise NotFound(f"operation {operation_id} not found", field="operation_id")
        return operation

    async def wait(
        self, operation_id: str, *, principal: Principal, timeout: float
    ) -> BulkOperation:
        """The operation once finished, or as it stands after ``timeout`` seconds."""
        await self._runner.wait(operation_id, timeout=timeout)
        return await self.get(operation_id, principal=principal)


class BulkRunner:
    """Carries out bulk operations in this process's background, and takes over those whose
    process died (``resume_orphans``, called periodically)."""

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        runs: RunService,
        tasks: TaskService,
        stale_after: timedelta = timedelta(seconds=30),
        batch: int = BATCH,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._runs = runs
        self._tasks = tasks
        self._stale_after = stale_after
        self._batch = batch
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None

    async def watch(self, every: float = 10.0) -> None:
        """From now on, look for orphaned operations every ``every`` seconds."""
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watching(every), name="bulk-orphans")

    async def _watching(self, every: float) -> None:
        while True:
            try:
                await self.resume_orphans()
            except Exception:
                logger.exception("looking for orphaned bulk operations failed")
            await asyncio.sleep(every)

    def run(self, operation: BulkOperation) -> None:
        if operation.id in self._jobs and not self._jobs[operation.id].done():
            return
        self._jobs[operation.id] = asyncio.create_task(
            self._execute(operation), name=f"bulk-{operation.id}"
        )

    async def wait(self, operation_id: str, *, timeout: float) -> None:
        job = self._jobs.get(operation_id)
        if job is not None and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(job), timeout)

    async def resume_orphans(self) -> int:
        """Take over running operations whose heartbeat is older than ``stale_after``."""
        now = self._clock.now()
        async with self._uow_factory() as uow:
            orphans = await uow.bulk_operations.take_stale(
                stale_before=now - self._stale_after, now=now, limit=10
            )
            await uow.commit()
        for operation in orphans:
            logger.info(
                "resuming bulk operation %s at %d/%d", operation.id, operation.done, operation.total
            )
            self.run(operation)
        return len(orphans)

    async def aclose(self) -> None:
        """Stop the jobs of this process (another process resumes them later)."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for job in self._jobs.values():
            job.cancel()
        await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        self._jobs.clear()

    async def _execute(self, operation: BulkOperation) -> None:
        try:
            while not operation.finished:
                # Memberships as they are now, each batch: a member removed from a team (or
                # made a viewer) stops changing its objects from the next batch on.
                who = await self._actor(operation)
                items, position = await self._next_batch(operation, who)
                if operation.action is BulkAction.CANCEL_RUNS:
                    for item, outcome in await self._cancel_batch(operation, items, who):
                        self._record(operation, item, outcome)
                else:
                    for item in items:
                        self._record(operation, item, await self._one(operation, item, who))
                operation.position = position
                if position is None or operation.done >= operation.total:
                    # Objects deleted since the count are not there to be handled.
                    operation.total = operation.done
                    operation.status = BulkStatus.SUCCEEDED
                    operation.finished_at = self._clock.now()
                await self._save(operation)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.exception("bulk operation %s failed", operation.id)
            operation.status = BulkStatus.FAILED
            operation.error = str(error)[:500]
            operation.finished_at = self._clock.now()
            with contextlib.suppress(Exception):
                await self._save(operation)

    async def _save(self, operation: BulkOperation) -> None:
        operation.heartbeat_at = self._clock.now()
        async with self._uow_factory() as uow:
            await uow.bulk_operations.update(operation)
            await uow.commit()

    def _record(self, operation: BulkOperation, item: str, outcome: Outcome) -> None:
        operation.done += 1
        if outcome.outcome == "succeeded":
            operation.succeeded += 1
        elif outcome.outcome == "skipped":
            operation.skipped += 1
        else:
            operation.failed += 1
        by_ids = operation.selection.ids is not None
        if by_ids or (outcome.outcome == "failed" and len(operation.results) < MAX_KEPT_FAILURES):
            entry: dict[str, Any] = {"id": item, "outcome": outcome.outcome}
            if outcome.detail is not None:
                entry["detail"] = outcome.detail
            if outcome.run_id is not None:
                entry["run_id"] = outcome.run_id
            operation.results.append(entry)

    async def _actor(self, operation: BulkOperation) -> Principal:
        """Who started the operation, with their team memberships read now."""
        async with self._uow_factory() as uow:
            teams = await uow.teams.roles_of(operation.actor_id)
        return Principal(operation.actor_id, operation.actor_role, teams=teams)

    async def _next_batch(
        self, operation: BulkOperation, principal: Principal
    ) -> tuple[list[str], str | None]:
        """The next items and the position after them (None: the selection is exhausted)."""
        remaining = operation.total - operation.done
        if remaining <= 0:
            return [], None
        size = min(self._batch, remaining)
        ids = operation.selection.ids
        if ids is not None:
            start = int(operation.position or 0)
            end = start + size
            return list(ids[start:end]), (str(end) if end < len(ids) else None)
        async with self._uow_factory() as uow:
            if operation.action.on_runs:
                run_filter = _run_filter(operation.selection.filter, principal, operation.frozen_at)
                page = await uow.runs.list(run_filter, limit=size, cursor=operation.position)
                return [r.id for r in page.items], page.next_cursor
            task_filter = _task_filter(operation.selection.filter, principal)
            tasks = await uow.tasks.list(task_filter, limit=size, cursor=operation.position)
            return [t.id for t in tasks.items], tasks.next_cursor

    async def _one(self, operation: BulkOperation, item: str, principal: Principal) -> Outcome:
        try:
            return await _ACTIONS[operation.action](self, operation, item, principal)
        except Conflict as conflict:
            return Outcome("skipped", conflict.message)
        except (NotFound, PermissionDenied, ValidationError, AlreadyExists) as error:
            field = f"{error.field}: " if error.field else ""
            return Outcome("failed", f"{field}{error.message}")

    async def _cancel_batch(
        self, operation: BulkOperation, run_ids: list[str], principal: Principal
    ) -> list[tuple[str, Outcome]]:
        """Cancels go a batch per transaction (the other actions one item each)."""
        if not run_ids:
            return []
        outcomes = await self._runs.cancel_many(
            run_ids, principal=principal, reason=f"cancelled in bulk ({operation.id})"
        )
        answers: list[tuple[str, Outcome]] = []
        for run_id in run_ids:
            outcome = outcomes[run_id]
            if outcome == "cancelled":
                answers.append((run_id, Outcome("succeeded")))
            elif outcome == "not_found":
                answers.append((run_id, Outcome("failed", f"run {run_id} not found")))
            elif outcome == "forbidden":
                answers.append((run_id, Outcome("failed", f"run {run_id} is read-only to you")))
            else:
                status = outcome.removeprefix("final:")
                answers.append((run_id, Outcome("skipped", f"the run is already {status}")))
        return answers

    # -- the actions, one item each ----------------------------------------------------------

    async def _retry(self, op: BulkOperation, run_id: str, who: Principal) -> Outcome:
        async with self._uow_factory() as uow:
            run = await uow.runs.get(run_id)
            if run is not None:
                later = await uow.runs.for_logical_time([run.task_id], run.scheduled_for)
                if any(r.attempt > run.attempt for r in later):
                    return Outcome("skipped", "the run has a newer attempt already")
        retry = await self._runs.retry(run_id, principal=who)
        return Outcome("succeeded", run_id=retry.id)

    async def _retrigger(self, op: BulkOperation, run_id: str, who: Principal) -> Outcome:
        """A new manual run of the run's task with the run's parameters (``run_params``):
        merged over the task's and validated as a trigger's are, so a subscription's new run
        is rendered by its template's current version (a retry, instead, repeats its attempt's
        params and version); parameters the template no longer accepts fail the item, naming
        the field."""
        run = await self._runs.get(run_id, principal=who)
        again = await self._runs.trigger(
            run.task_id,
            principal=who,
            idempotency_key=f"bulk-{op.id}-{run_id}",
            params=run.run_params,
        )
        return Outcome("succeeded", run_id=again.id)

    async def _pause(self, op: BulkOperation, task_id: str, who: Principal) -> Outcome:
        task = await self._tasks.get(task_id, principal=who)
        if task.paused:
            return Outcome("skipped", "already paused")
        await self._tasks.pause(task_id, principal=who)
        return Outcome("succeeded")

    async def _resume(self, op: BulkOperation, task_id: str, who: Principal) -> Outcome:
        task = await self._tasks.get(task_id, principal=who)
        if not task.paused:
            return Outcome("skipped", "not paused")
        await self._tasks.resume(task_id, principal=who)
        return Outcome("succeeded")

    async def _delete(self, op: BulkOperation, task_id: str, who: Principal) -> Outcome:
        await self._tasks.delete(task_id, principal=who)
        return Outcome("succeeded")


_Action = Callable[[BulkRunner, BulkOperation, str, Principal], Awaitable[Outcome]]
_ACTIONS: dict[BulkAction, _Action] = {
    BulkAction.RETRY_RUNS: BulkRunner._retry,
    BulkAction.RETRIGGER_RUNS: BulkRunner._retrigger,
    BulkAction.PAUSE_TASKS: BulkRunner._pause,
    BulkAction.RESUME_TASKS: BulkRunner._resume,
    BulkAction.DELETE_TASKS: BulkRunner._delete,
}

_RUN_FILTER_KEYS = frozenset(
    {"task_id", "status", "trigger", "worker_id", "queue", "created_after", "created_before"}
)
_TASK_FILTER_KEYS = frozenset({"enabled", "queue", "name_prefix", "owner_id", "team_id"})


def _check_selection(action: BulkAction, selection: Selection) -> None:
    if selection.ids is not None:
        if not selection.ids:
            raise ValidationError("ids must list at least one id", field="ids")
        if len(selection.ids) > MAX_IDS:
            raise ValidationError(f"at most {MAX_IDS} ids per operation", field="ids")
        if len(set(selection.ids)) != len(selection.ids):
            raise ValidationError("ids must not repeat", field="ids")
        for value in selection.ids:
            if not isinstance(value, str) or not 0 < len(value) <= 64:
                raise ValidationError("ids must be object ids", field="ids")
        return
    allowed = _RUN_FILTER_KEYS if action.on_runs else _TASK_FILTER_KEYS
    for key in selection.filter:
        if key not in allowed:
            raise ValidationError(
                f"unknown filter {key!r}; expected one of {sorted(allowed)}", field=f"filter.{key}"
            )
    # Parse now, so that a bad value is refused before the operation exists.
    probe = Principal("-", Role.ADMIN)
    if action.on_runs:
        _run_filter(selection.filter, probe, None)
    else:
        _task_filter(selection.filter, probe)


async def _count(
    uow: UnitOfWork,
    action: BulkAction,
    selection: Selection,
    principal: Principal,
    *,
    frozen_at: datetime | None,
) -> int:
    if action.on_runs:
        return await uow.runs.count(_run_filter(selection.filter, principal, frozen_at))
    return await uow.tasks.count(_task_filter(selection.filter, principal))


def _run_filter(
    values: Mapping[str, Any], principal: Principal, frozen_at: datetime | None
) -> RunFilter:
    statuses = values.get("status") or []
    if isinstance(statuses, str):
        statuses = [statuses]
    try:
        parsed_statuses = frozenset(RunStatus(s) for s in statuses)
    except ValueError:
        raise ValidationError(
            f"status must be among {[s.value for s in RunStatus]}", field="filter.status"
        ) from None
    trigger = values.get("trigger")
    try:
        parsed_trigger = RunTrigger(trigger) if trigger is not None else None
    except ValueError:
        raise ValidationError(
            f"trigger must be one of {[t.value for t in RunTrigger]}", field="filter.trigger"
        ) from None
    before = _instant(values.get("created_before"), "filter.created_before")
    if frozen_at is not None:
        # ``created_before`` is exclusive: runs created up to the start instant are in.
        bound = frozen_at + _TICK
        before = bound if before is None else min(before, bound)
    return RunFilter(
        team_ids=change_scope(principal),
        task_id=_text(values.get("task_id"), "filter.task_id"),
        statuses=parsed_statuses,
        trigger=parsed_trigger,
        worker_id=_text(values.get("worker_id"), "filter.worker_id"),
        queue=_text(values.get("queue"), "filter.queue"),
        created_after=_instant(values.get("created_after"), "filter.created_after"),
        created_before=before,
    )


def _task_filter(values: Mapping[str, Any], principal: Principal) -> TaskFilter:
    scope = change_scope(principal)
    owner = _text(values.get("owner_id"), "filter.owner_id")
    team = _text(values.get("team_id"), "filter.team_id")
    enabled = values.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ValidationError("enabled must be true or false", field="filter.enabled")
    if team is not None:
        scope = frozenset({team}) if scope is None else scope & {team}
    return TaskFilter(
        owner_id=owner,
        team_ids=scope,
        enabled=enabled,
        queue=_text(values.get("queue"), "filter.queue"),
        name_prefix=_text(values.get("name_prefix"), "filter.name_prefix"),
    )


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise ValidationError(f"{name} must be a string of 1-200 characters", field=name)
    return value


def _instant(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        instant = value
    else:
        try:
            instant = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"{name} must be an RFC 3339 date-time", field=name) from None
    if instant.tzinfo is None:
        raise ValidationError(f"{name} needs a time zone offset", field=name)
    return instant
