"""In-memory repositories: the port contracts, honoured over a :class:`Transaction`."""

from __future__ import annotations

import builtins
import copy
import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from scheduler_application.errors import AlreadyExists, Conflict, NotFound
from scheduler_application.operations.bulk_operations import BulkOperation
from scheduler_application.ports.repositories import (
    EventQuery,
    Page,
    PurgeBatch,
    PurgeKey,
    QueueActivity,
    RunFilter,
    TaskFilter,
)
from scheduler_application.testing.pagination import decode_cursor, encode_cursor
from scheduler_application.testing.store import Transaction
from scheduler_domain.accounts import ApiKey, RefreshToken, Role, User
from scheduler_domain.circuits import Circuit
from scheduler_domain.events import (
    LOG_START,
    EventCursor,
    EventRecord,
    LoggedEvent,
    RunEvent,
    SlotDecision,
    run_event_kind,
)
from scheduler_domain.queue_settings import QueueSettings
from scheduler_domain.run import TaskRun
from scheduler_domain.shared_limits import Partition, SharedLimit
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.teams import Membership, Team, TeamRole
from scheduler_domain.template import Template
from scheduler_domain.worker import Worker, WorkerStatus

R = TypeVar("R")
_MIN_LIMIT = 1


def _copy(row: R) -> R:
    return copy.deepcopy(row)


def _check_limit(limit: int) -> None:
    if limit < _MIN_LIMIT:
        raise ValueError("limit must be at least 1")


@dataclass(slots=True)
class DependencyMark:
    """The fake's ``task_runs.dependents_resolved_at``: one row per resolved run."""

    id: str
    at: datetime


class _Repository:
    def __init__(self, tx: Callable[[], Transaction]) -> None:
        self._tx = tx

    @property
    def tx(self) -> Transaction:
        return self._tx()


def _versioned_update(tx: Transaction, table: str, row: Any, expected_version: int) -> None:
    current = tx.get(table, row.id)
    if current is None:
        raise Conflict(f"{table[:-1]} {row.id} no longer exists")
    if current.version != expected_version:
        raise Conflict(
            f"{table[:-1]} {row.id} is at version {current.version}, not {expected_version}",
            field="version",
        )
    tx.replace(table, row)


def _page_by_id(
    rows: list[R], *, limit: int, cursor: str | None, key: Callable[[R], str]
) -> Page[R]:
    _check_limit(limit)
    rows.sort(key=key)
    if cursor is not None:
        (after,) = decode_cursor(cursor)
        rows = [row for row in rows if key(row) > str(after)]
    items = rows[: limit + 1]
    more = len(items) > limit
    items = items[:limit]
    return Page(
        [_copy(row) for row in items],
        encode_cursor([key(items[-1])]) if more and items else None,
    )


class InMemoryTaskRepository(_Repository):
    async def add(self, task: Task) -> None:
        self.tx.insert("tasks", task)

    async def get(self, task_id: str, *, for_update: bool = False) -> Task | None:
        found: Task | None = self.tx.get("tasks", task_id)
        return _copy(found)

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        found = [self.tx.get("tasks", task_id) for task_id in dict.fromkeys(task_ids)]
        return [_copy(task) for task in found if task is not None]

    async def get_by_name(self, owner_id: str, name: str) -> Task | None:
        named = [t for t in self.tx.scan("tasks") if t.owner_id == owner_id and t.name == name]
        return _copy(min(named, key=lambda t: t.id)) if named else None

    async def get_in_team(self, team_id: str, name: str) -> Task | None:
        for task in self.tx.scan("tasks"):
            if task.team_id == team_id and task.name == name:
                return _copy(task)  # type: ignore[no-any-return]
        return None

    async def with_name(self, name: str) -> builtins.list[Task]:
        return [_copy(t) for t in self.tx.scan("tasks") if t.name == name]

    async def list(
        self, task_filter: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> Page[Task]:
        rows: list[Task] = [t for t in self.tx.scan("tasks") if _task_matches(t, task_filter)]
        return _page_by_id(rows, limit=limit, cursor=cursor, key=lambda t: t.id)

    async def count(self, task_filter: TaskFilter) -> int:
        return sum(1 for t in self.tx.scan("tasks") if _task_matches(t, task_filter))

    async def update(self, task: Task, *, expected_version: int) -> None:
        _versioned_update(self.tx, "tasks", task, expected_version)

    async def update_many(self, writes: Sequence[tuple[Task, int]]) -> None:
        for task, expected_version in writes:
            _versioned_update(self.tx, "tasks", task, expected_version)

    async def delete(self, task_id: str) -> None:
        tx = self.tx
        if tx.get("tasks", task_id) is None:
            return
        for table in ("runs", "events", "decisions"):
            for row in list(tx.scan(table)):
                if row.task_id == task_id:
                    tx.delete(table, row.id)
        for logged in list(tx.scan("event_log")):  # run events go with their runs
            if isinstance(logged.entry, RunEvent) and logged.entry.task_id == task_id:
                tx.delete("event_log", logged.id)
        tx.delete("tasks", task_id)

    async def with_template(self, template_id: str) -> builtins.list[Task]:
        tx = self.tx
        found = [t for t in tx.scan("tasks") if t.template_id == template_id]
        for task in found:
            tx.lock("tasks", task.id)
        return sorted((_copy(t) for t in found), key=lambda t: t.id)

    async def due(
        self, now: datetime, *, limit: int, ahead_until: datetime | None = None
    ) -> builtins.list[Task]:
        _check_limit(limit)
        tx = self.tx

        def claimable(t: Task) -> bool:
            if not t.enabled or t.next_run_at is None:
                return False
            if ahead_until is not None and t.fires_ahead:
                return t.next_run_at <= ahead_until
            return t.next_run_at <= now

        candidates = sorted(
            (t for t in tx.scan("tasks") if claimable(t)),
            key=lambda t: (t.next_run_at, t.id),
        )
        return _lock_first(tx, "tasks", candidates, limit)

    async def next_due_at(self, *, ahead: timedelta = timedelta(0)) -> datetime | None:
        times = [
            t.next_run_at - ahead if t.fires_ahead else t.next_run_at
            for t in self.tx.scan("tasks")
            if t.enabled and t.next_run_at
        ]
        return min(times, default=None)

    async def set_next_run_at(self, task_id: str, next_run_at: datetime | None) -> None:
        self.tx.patch("tasks", task_id, {"next_run_at": next_run_at})

    async def set_next_run_at_many(self, changes: Sequence[tuple[str, datetime | None]]) -> None:
        for task_id, next_run_at in changes:
            await self.set_next_run_at(task_id, next_run_at)

    async def dependents(self, task_id: str) -> builtins.list[Task]:
        rows = [t for t in self.tx.scan("tasks") if task_id in t.depends_on]
        return [_copy(t) for t in sorted(rows, key=lambda t: t.id)]

    async def dependency_edges(self) -> dict[str, tuple[str, ...]]:
        return {t.id: tuple(t.depends_on) for t in self.tx.scan("tasks") if t.depends_on}

    async def queue_names(self) -> builtins.list[str]:
        return sorted({t.queue for t in self.tx.scan("tasks")})

    async def lock_many(self, task_ids: Sequence[str]) -> set[str]:
        tx = self.tx
        return {
            task_id
            for task_id in sorted(set(task_ids))
            if tx.get("tasks", task_id) is not None and tx.lock("tasks", task_id)
        }


def _task_matches(task: Task, task_filter: TaskFilter) -> bool:
    return (
        (task_filter.owner_id is None or task.owner_id == task_filter.owner_id)
        and (task_filter.team_ids is None or task.team_id in task_filter.team_ids)
        and (task_filter.enabled is None or task.enabled == task_filter.enabled)
        and (task_filter.queue is None or task.queue == task_filter.queue)
        and (task_filter.name_prefix is None or task.name.startswith(task_filter.name_prefix))
        and (task_filter.template_id is None or task.template_id == task_filter.template_id)
    )


def _lock_first(tx: Transaction, table: str, candidates: list[R], limit: int) -> builtins.list[R]:
    """``FOR UPDATE SKIP LOCKED``: take the first ``limit`` rows no other transaction holds."""
    taken: list[R] = []
    for row in candidates:
        if len(taken) == limit:
            break
        if tx.lock(table, row.id):  # type: ignore[attr-defined]
            taken.append(_copy(row))
    return taken


#: What ``update_many(fields=...)`` may write: every field but the id (as the SQL adapter).
_WRITABLE_RUN_FIELDS = frozenset(item.name for item in dataclasses.fields(TaskRun)) - {"id"}


class InMemoryRunRepository(_Repository):
    async def add(self, run: TaskRun, *, events: Sequence[RunEvent] = ()) -> None:
        if self.tx.get("tasks", run.task_id) is None:
            raise NotFound(f"task {run.task_id} not found", field="task_id")
        self.tx.insert("runs", run)
        for event in events:
            insert_run_event(self.tx, event)

    async def add_new_many(
        self, runs: Sequence[TaskRun], *, events: Sequence[RunEvent] = ()
    ) -> set[str]:
        inserted: set[str] = set()
        for run in runs:
            try:
                self.tx.insert("runs", run)
            except AlreadyExists:
                continue
            inserted.add(run.id)
        for event in events:
            if event.run_id in inserted:
                insert_run_event(self.tx, event)
        return inserted

    async def get(self, run_id: str) -> TaskRun | None:
        found: TaskRun | None = self.tx.get("runs", run_id)
        return _copy(found)

    async def move_to_team(self, task_id: str, team_id: str) -> int:
        moved = 0
        for run in list(self.tx.scan("runs")):
            if run.task_id == task_id and run.team_id != team_id:
                self.tx.patch("runs", run.id, {"team_id": team_id})
                moved += 1
        return moved

    async def get_by_idempotency_key(self, task_id: str, key: str) -> TaskRun | None:
        for run in self.tx.scan("runs"):
            if run.task_id == task_id and run.idempotency_key == key:
                return _copy(run)  # type: ignore[no-any-return]
        return None

    async def get_by_idempotency_keys(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], TaskRun]:
        wanted = set(keys)
        return {
            (run.task_id, run.idempotency_key): _copy(run)
            for run in self.tx.scan("runs")
            if (run.task_id, run.idempotency_key) in wanted
        }

    async def update(self, run: TaskRun, *, expected_version: int) -> None:
        _versioned_update(self.tx, "runs", run, expected_version)

    async def claim(
        self, run_id: str, *, worker_id: str, now: datetime, lease: timedelta
    ) -> TaskRun | None:
        tx = self.tx
        current: TaskRun | None = tx.get("runs", run_id)
        if current is None or current.status is not RunStatus.QUEUED:
            return None
        if tx.locked_by_other("runs", run_id):
            return None
        claimed = _copy(current)
        claimed.claim(worker_id=worker_id, now=now, lease=lease)
        tx.replace("runs", claimed)
        return _copy(claimed)

    async def claim_next(
        self, *, queues: Sequence[str], worker_id: str, now: datetime, lease: timedelta
    ) -> TaskRun | None:
        tx = self.tx
        wanted = set(queues)
        candidates: list[TaskRun] = sorted(
            (r for r in tx.scan("runs") if r.status is RunStatus.QUEUED and r.queue in wanted),
            key=lambda r: (-r.priority, r.created_at, r.id),
        )
        for run in candidates:
            if tx.lock("runs", run.id):
                return await self.claim(run.id, worker_id=worker_id, now=now, lease=lease)
        return None

    async def renew_lease(
        self, run_id: str, *, worker_id: str, token: int, now: datetime, lease: timedelta
    ) -> bool:
        tx = self.tx

        def renewable(row: TaskRun | None) -> bool:
            return (
                row is not None
                and row.status is RunStatus.RUNNING
                and row.version == token
                and row.worker_id == worker_id
            )

        if not renewable(tx.get("runs", run_id)):
            return False
        tx.patch(
            "runs",
            run_id,
            {"heartbeat_at": now, "lease_expires_at": now + lease},
            condition=renewable,
        )
        return True

    async def list(
        self, run_filter: RunFilter, *, limit: int, cursor: str | None = None
    ) -> Page[TaskRun]:
        _check_limit(limit)
        rows: list[TaskRun] = sorted(
            (r for r in self.tx.scan("runs") if _run_matches(r, run_filter)),
            key=lambda r: (r.created_at, r.id),
            reverse=True,
        )
        if cursor is not None:
            created, run_id = decode_cursor(cursor)
            boundary = (datetime.fromisoformat(str(created)), str(run_id))
            rows = [r for r in rows if (r.created_at, r.id) < boundary]
        items = rows[: limit + 1]
        more = len(items) > limit
        items = items[:limit]
        next_cursor = None
        if more and items:
            next_cursor = encode_cursor([items[-1].created_at.isoformat(), items[-1].id])
        return Page([_copy(r) for r in items], next_cursor)

    async def count(self, run_filter: RunFilter) -> int:
        return sum(1 for r in self.tx.scan("runs") if _run_matches(r, run_filter))

    async def active_for_task(self, task_id: str) -> builtins.list[TaskRun]:
        rows = [r for r in self.tx.scan("runs") if r.task_id == task_id and r.status.is_active]
        return [_copy(r) for r in sorted(rows, key=lambda r: (r.created_at, r.id))]

    async def for_logical_time(
        self, task_ids: Sequence[str], scheduled_for: datetime
    ) -> builtins.list[TaskRun]:
        wanted = set(task_ids)
        rows = [
            r
            for r in self.tx.scan("runs")
            if r.task_id in wanted and r.scheduled_for == scheduled_for
        ]
        return [_copy(r) for r in sorted(rows, key=lambda r: (r.task_id, r.attempt))]

    async def pending_due(self, now: datetime, *, limit: int) -> builtins.list[TaskRun]:
        _check_limit(limit)
        tx = self.tx
        candidates: list[TaskRun] = sorted(
            (
                r
                for r in tx.scan("runs")
                if r.status is RunStatus.PENDING and (r.not_before is None or r.not_before <= now)
            ),
            key=lambda r: (r.not_before or r.created_at, -r.priority, r.id),
        )
        return _lock_first(tx, "runs", candidates, limit)

    async def expired_leases(self, now: datetime, *, limit: int) -> builtins.list[TaskRun]:
        _check_limit(limit)
        tx = self.tx
        candidates: list[TaskRun] = sorted(
            (r for r in tx.scan("runs") if r.is_lease_expired(now)),
            key=lambda r: (r.lease_expires_at, r.id),
        )
        return _lock_first(tx, "runs", candidates, limit)

    async def count_queued(self, queues: Sequence[str]) -> dict[str, int]:
        wanted = set(queues)
        counts: dict[str, int] = {}
        for run in self.tx.scan("runs"):
            if run.status is RunStatus.QUEUED and run.queue in wanted:
                counts[run.queue] = counts.get(run.queue, 0) + 1
        return counts

    async def stale_queued(self, queued_before: datetime, *, limit: int) -> builtins.list[TaskRun]:
        _check_limit(limit)
        rows: list[TaskRun] = sorted(
            (
                r
                for r in self.tx.scan("runs")
                if r.status is RunStatus.QUEUED
                and r.queued_at is not None
                and r.queued_at < queued_before
            ),
            key=lambda r: (r.queued_at, r.id),
        )
        return [_copy(r) for r in rows[:limit]]

    async def held_past_due(self, due_before: datetime, *, limit: int) -> builtins.list[TaskRun]:
        _check_limit(limit)
        rows: list[TaskRun] = sorted(
            (
                r
                for r in self.tx.scan("runs")
                if r.status is RunStatus.QUEUED
                and r.queued_at is not None
                and r.not_before is not None
                and r.queued_at < r.not_before < due_before
            ),
            key=lambda r: (r.not_before, r.id),
        )
        return [_copy(r) for r in rows[:limit]]

    async def running_on_worker(self, worker_id: str) -> builtins.list[TaskRun]:
        rows = [
            r
            for r in self.tx.scan("runs")
            if r.status is RunStatus.RUNNING and r.worker_id == worker_id
        ]
        return [_copy(r) for r in sorted(rows, key=lambda r: r.id)]

    async def count_by_status(self) -> dict[RunStatus, int]:
        counts: dict[RunStatus, int] = {}
        for run in self.tx.scan("runs"):
            counts[run.status] = counts.get(run.status, 0) + 1
        for tally in self.tx.scan("run_tallies"):
            counts[RunStatus(tally.id)] = counts.get(RunStatus(tally.id), 0) + tally.count
        return counts

    async def purge_finished(
        self,
        *,
        before: datetime,
        statuses: Collection[RunStatus],
        limit: int,
        after: PurgeKey | None = None,
    ) -> PurgeBatch:
        wanted = set(statuses)
        window = sorted(
            (
                r
                for r in self.tx.scan("runs")
                if r.status in wanted
                and r.finished_at is not None
                and r.finished_at < before
                and (after is None or (r.finished_at, r.id) > after)
            ),
            key=lambda r: (r.finished_at, r.id),
        )[:limit]
        deleted: dict[RunStatus, int] = {}
        for run in window:
            marked = self.tx.get("dependency_marks", run.id) is not None
            if (not marked and _dependents_of(self.tx, run.task_id)) or _undecided_dependent(
                self.tx, run.task_id, run.scheduled_for, run.finished_at
            ):
                continue
            for event in [e for e in self.tx.scan("events") if e.run_id == run.id]:
                self.tx.delete("events", event.id)
            self.tx.delete("runs", run.id)
            deleted[run.status] = deleted.get(run.status, 0) + 1
        for status, n in deleted.items():
            tally = self.tx.get("run_tallies", status.value)
            if tally is None:
                self.tx.insert("run_tallies", RunTally(id=status.value, count=n))
            else:
                self.tx.replace("run_tallies", RunTally(id=status.value, count=n + tally.count))
        last = (window[-1].finished_at, window[-1].id) if len(window) == limit else None
        return PurgeBatch(
            scanned=len(window), last=last, deleted=sum(deleted.values()), by_status=deleted
        )

    async def queue_activity(self, since: datetime) -> builtins.list[QueueActivity]:
        tallies: dict[str, dict[str, int]] = {}
        oldest: dict[str, datetime] = {}
        for run in self.tx.scan("runs"):
            if run.status is RunStatus.QUEUED and run.queued_at is not None:
                known = oldest.get(run.queue)
                oldest[run.queue] = run.queued_at if known is None else min(known, run.queued_at)
            counts = {
                "pending": int(run.status is RunStatus.PENDING),
                "queued": int(run.status is RunStatus.QUEUED),
                "running": int(run.status is RunStatus.RUNNING),
                "created": int(run.created_at >= since),
                "finished": int(run.finished_at is not None and run.finished_at >= since),
            }
            if not any(counts.values()):
                continue
            tally = tallies.setdefault(run.queue, dict.fromkeys(counts, 0))
            for name, value in counts.items():
                tally[name] += value
        return [
            QueueActivity(queue=queue, oldest_queued_at=oldest.get(queue), **tallies[queue])
            for queue in sorted(tallies)
        ]

    async def latest_statuses(
        self, task_ids: Sequence[str], *, per_task: int
    ) -> dict[str, builtins.list[tuple[str, RunStatus]]]:
        wanted = set(task_ids)
        runs = [run for run in self.tx.scan("runs") if run.task_id in wanted]
        runs.sort(key=lambda run: (run.created_at, run.id), reverse=True)
        latest: dict[str, builtins.list[tuple[str, RunStatus]]] = {}
        for run in runs:
            statuses = latest.setdefault(run.task_id, [])
            if len(statuses) < per_task:
                statuses.append((run.id, run.status))
        return latest

    async def count_in_flight(self, task_ids: Sequence[str]) -> dict[str, int]:
        wanted = set(task_ids)
        counts: dict[str, int] = {}
        for run in self.tx.scan("runs"):
            if run.task_id in wanted and run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                counts[run.task_id] = counts.get(run.task_id, 0) + 1
        return counts

    async def pending_due_excluding(
        self,
        now: datetime,
        *,
        limit: int,
        exclude_task_ids: Sequence[str],
        exclude_queues: Sequence[str] = (),
    ) -> builtins.list[TaskRun]:
        return self._pending(
            now,
            limit=limit,
            keep=lambda r: r.task_id not in exclude_task_ids and r.queue not in exclude_queues,
        )

    async def waiting_in_queues(
        self, queues: Sequence[str], *, statuses: Sequence[RunStatus], limit: int
    ) -> builtins.list[TaskRun]:
        _check_limit(limit)
        tx = self.tx
        wanted = set(queues)
        of_queue = {t.id for t in tx.scan("tasks") if t.queue in wanted}
        candidates: list[TaskRun] = sorted(
            (
                r
                for r in tx.scan("runs")
                if r.status in statuses and (r.queue in wanted or r.task_id in of_queue)
            ),
            key=lambda r: (r.created_at, r.id),
        )
        return _lock_first(tx, "runs", candidates, limit)

    async def count_in_flight_by_queue(self, queues: Sequence[str]) -> dict[str, int]:
        tx = self.tx
        queue_of = {t.id: t.queue for t in tx.scan("tasks") if t.queue in set(queues)}
        counts: dict[str, int] = {}
        for run in tx.scan("runs"):
            queue = queue_of.get(run.task_id)
            if queue is not None and run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                counts[queue] = counts.get(queue, 0) + 1
        return counts

    async def pending_among(self, run_ids: Sequence[str], now: datetime) -> builtins.list[TaskRun]:
        wanted = set(run_ids)
        return self._pending(now, limit=max(len(wanted), 1), keep=lambda r: r.id in wanted)

    async def pending_fair(
        self, now: datetime, *, queues: Sequence[str], limit: int
    ) -> builtins.list[TaskRun]:
        _check_limit(limit)
        tx = self.tx
        wanted = set(queues)
        key_of = {t.id: t.fair_share_key for t in tx.scan("tasks")}
        due: list[TaskRun] = sorted(
            (
                r
                for r in tx.scan("runs")
                if r.status is RunStatus.PENDING
                and r.queue in wanted
                and (r.not_before is None or r.not_before <= now)
            ),
            key=lambda r: (-r.priority, r.not_before or r.created_at, r.id),
        )
        turns: dict[tuple[str, str, int], int] = {}
        ranked: list[tuple[int, int, datetime, str, TaskRun]] = []
        for run in due:
            group = (run.queue, key_of.get(run.task_id, run.owner_id), run.priority)
            turns[group] = turns.get(group, 0) + 1
            ranked.append(
                (-run.priority, turns[group], run.not_before or run.created_at, run.id, run)
            )
        ranked.sort(key=lambda item: item[:4])
        return _lock_first(tx, "runs", [item[4] for item in ranked], limit)

    async def count_in_flight_by_fair_key(
        self, queues: Sequence[str]
    ) -> dict[tuple[str, str], int]:
        tx = self.tx
        wanted = set(queues)
        of_task = {t.id: (t.queue, t.fair_share_key) for t in tx.scan("tasks") if t.queue in wanted}
        counts: dict[tuple[str, str], int] = {}
        for run in tx.scan("runs"):
            group = of_task.get(run.task_id)
            if group is not None and run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                counts[group] = counts.get(group, 0) + 1
        return counts

    def _pending(
        self, now: datetime, *, limit: int, keep: Callable[[TaskRun], bool]
    ) -> builtins.list[TaskRun]:
        _check_limit(limit)
        tx = self.tx
        candidates: list[TaskRun] = sorted(
            (
                r
                for r in tx.scan("runs")
                if r.status is RunStatus.PENDING
                and (r.not_before is None or r.not_before <= now)
                and keep(r)
            ),
            key=lambda r: (r.not_before or r.created_at, -r.priority, r.id),
        )
        return _lock_first(tx, "runs", candidates, limit)

    async def queued_in(self, queues: Sequence[str], *, limit: int) -> builtins.list[TaskRun]:
        _check_limit(limit)
        tx = self.tx
        wanted = set(queues)
        candidates: list[TaskRun] = sorted(
            (r for r in tx.scan("runs") if r.status is RunStatus.QUEUED and r.queue in wanted),
            key=lambda r: (r.queued_at or r.created_at, r.id),
        )
        return _lock_first(tx, "runs", candidates, limit)

    async def finished_upstream_runs(
        self, *, since: datetime, limit: int
    ) -> builtins.list[TaskRun]:
        _check_limit(limit)
        tx = self.tx
        upstreams = {u for t in tx.scan("tasks") for u in t.depends_on}
        terminal = (RunStatus.SUCCEEDED, RunStatus.DEAD_LETTERED, RunStatus.CANCELLED)
        candidates: list[TaskRun] = sorted(
            (
                r
                for r in tx.scan("runs")
                if r.task_id in upstreams
                and r.status in terminal
                and r.finished_at is not None
                and r.finished_at >= since
                and tx.get("dependency_marks", r.id) is None
            ),
            key=lambda r: (r.finished_at, r.id),
        )
        return _lock_first(tx, "runs", candidates, limit)

    async def mark_dependents_resolved(self, run_ids: Sequence[str], *, at: datetime) -> None:
        tx = self.tx
        for run_id in dict.fromkeys(run_ids):
            if tx.get("runs", run_id) is not None and tx.get("dependency_marks", run_id) is None:
                tx.insert("dependency_marks", DependencyMark(id=run_id, at=at))

    async def claim_many(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[TaskRun]:
        claimed: list[TaskRun] = []
        for run_id in sorted(set(run_ids)):
            run = await self.claim(run_id, worker_id=worker_id, now=now, lease=lease)
            if run is not None:
                claimed.append(run)
        return claimed

    async def start_many(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[tuple[TaskRun, Task | None]]:
        claimed = await self.claim_many(run_ids, worker_id=worker_id, now=now, lease=lease)
        started: list[tuple[TaskRun, Task | None]] = []
        for run in claimed:
            insert_run_event(self.tx, run.claim_event())
            started.append((run, _copy(self.tx.get("tasks", run.task_id))))
        return started

    async def start_many_owned(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[tuple[TaskRun, Task | None, Role | None]]:
        started = await self.start_many(run_ids, worker_id=worker_id, now=now, lease=lease)
        owned: list[tuple[TaskRun, Task | None, Role | None]] = []
        for run, task in started:
            owner = self.tx.get("users", task.owner_id) if task is not None else None
            owned.append((run, task, owner.role if owner is not None else None))
        return owned

    async def get_many(self, run_ids: Sequence[str]) -> builtins.list[TaskRun]:
        tx = self.tx
        found = [tx.get("runs", run_id) for run_id in sorted(set(run_ids))]
        return [_copy(run) for run in found if run is not None]

    async def update_many(
        self,
        writes: Sequence[tuple[TaskRun, int]],
        *,
        fields: Collection[str] | None = None,
        events: Sequence[RunEvent] = (),
    ) -> None:
        await self._update_many(writes, fields)
        for event in events:
            insert_run_event(self.tx, event)

    async def update_each(
        self,
        writes: Sequence[tuple[TaskRun, int]],
        *,
        fields: Collection[str] | None = None,
        events: Sequence[RunEvent] = (),
    ) -> set[str]:
        written: set[str] = set()
        for write in writes:
            try:
                await self._update_many([write], fields)
            except Conflict:
                continue
            written.add(write[0].id)
        for event in events:
            if event.run_id in written:
                insert_run_event(self.tx, event)
        return written

    async def _update_many(
        self, writes: Sequence[tuple[TaskRun, int]], fields: Collection[str] | None
    ) -> None:
        tx = self.tx
        unknown = set(fields or ()) - _WRITABLE_RUN_FIELDS
        if unknown:
            raise ValueError(f"not writable run fields: {sorted(unknown)}")
        for run, expected_version in writes:
            if fields is None:
                _versioned_update(tx, "runs", run, expected_version)
                continue
            current: TaskRun | None = tx.get("runs", run.id)
            written = copy.copy(current)
            if written is not None:
                for name in fields:
                    setattr(written, name, getattr(run, name))
            _versioned_update(tx, "runs", written or run, expected_version)

    async def renew_leases(
        self, held: Sequence[tuple[str, int]], *, worker_id: str, now: datetime, lease: timedelta
    ) -> set[str]:
        renewed: set[str] = set()
        for run_id, token in held:
            if await self.renew_lease(
                run_id, worker_id=worker_id, token=token, now=now, lease=lease
            ):
                renewed.add(run_id)
        return renewed

    async def append_output(
        self, run_id: str, text: str, *, worker_id: str, token: int, limit: int
    ) -> bool:
        def appendable(row: TaskRun | None) -> bool:
            return (
                row is not None
                and row.status is RunStatus.RUNNING
                and row.version == token
                and row.worker_id == worker_id
                and len(row.output or "") + len(text) <= limit
            )

        row = self.tx.get("runs", run_id)
        if not appendable(row):
            return False
        assert row is not None
        self.tx.patch("runs", run_id, {"output": (row.output or "") + text}, condition=appendable)
        return True

    async def still_held(self, held: Sequence[tuple[str, int]], *, worker_id: str) -> set[str]:
        kept: set[str] = set()
        for run_id, token in held:
            row = self.tx.get("runs", run_id)
            if (
                row is not None
                and row.status is RunStatus.RUNNING
                and row.version == token
                and row.worker_id == worker_id
            ):
                kept.add(run_id)
        return kept


def _run_matches(run: TaskRun, run_filter: RunFilter) -> bool:
    return (
        (run_filter.owner_id is None or run.owner_id == run_filter.owner_id)
        and (run_filter.team_ids is None or run.team_id in run_filter.team_ids)
        and (run_filter.task_id is None or run.task_id == run_filter.task_id)
        and (not run_filter.statuses or run.status in run_filter.statuses)
        and (run_filter.trigger is None or run.trigger is run_filter.trigger)
        and (run_filter.worker_id is None or run.worker_id == run_filter.worker_id)
        and (run_filter.queue is None or run.queue == run_filter.queue)
        and (run_filter.created_after is None or run.created_at >= run_filter.created_after)
        and (run_filter.created_before is None or run.created_at < run_filter.created_before)
    )


@dataclass
class _LogRow:
    """An entry of the fake event log: a run event or a record, numbered as it is written (one
    test runs one transaction at a time, so that is commit order)."""

    id: str
    seq: int
    entry: RunEvent | EventRecord


def insert_run_event(tx: Transaction, event: RunEvent) -> None:
    """A run event, in the audit trail and in the event log."""
    tx.insert("events", event)
    tx.insert("event_log", _LogRow(event.id, tx.store.next_serial(), event))


class InMemoryRunEventRepository(_Repository):
    async def add(self, event: RunEvent) -> None:
        insert_run_event(self.tx, event)

    async def add_many(self, events: Sequence[RunEvent]) -> None:
        for event in events:
            await self.add(event)

    async def list_for_run(self, run_id: str) -> builtins.list[RunEvent]:
        rows = [e for e in self.tx.scan("events") if e.run_id == run_id]
        return [_copy(e) for e in sorted(rows, key=lambda e: e.at)]

    async def record(self, record: EventRecord) -> None:
        self.tx.insert("event_log", _LogRow(record.id, self.tx.store.next_serial(), record))

    async def record_many(self, records: Sequence[EventRecord]) -> None:
        for record in records:
            await self.record(record)

    async def read_log(self, query: EventQuery, *, limit: int) -> builtins.list[LoggedEvent]:
        teams = {t.id: t.team_id for t in self.tx.scan("tasks")}
        found: builtins.list[LoggedEvent] = []
        for row in sorted(self.tx.scan("event_log"), key=lambda r: r.seq):
            logged = _logged(row)
            entry = row.entry
            team = teams.get(logged.task_id or "") or getattr(entry, "team_id", None)
            visible = query.team_ids is None or team in query.team_ids
            if not visible and query.owner_id is not None:
                visible = getattr(entry, "owner_id", None) == query.owner_id
            if (
                logged.cursor <= query.after
                or not visible
                or (query.task_id is not None and logged.task_id != query.task_id)
                or (query.run_id is not None and logged.run_id != query.run_id)
                or (query.statuses and logged.to_status not in query.statuses)
                or (query.statuses and isinstance(entry, EventRecord))
                or (query.kinds and logged.kind not in query.kinds)
            ):
                continue
            found.append(logged)
            if len(found) == limit:
                break
        return found

    async def log_head(self) -> EventCursor:
        seqs = [row.seq for row in self.tx.scan("event_log")]
        return EventCursor(0, max(seqs)) if seqs else LOG_START

    async def prune(self, *, before: datetime, limit: int) -> int:
        rows = sorted(self.tx.scan("event_log"), key=lambda r: r.seq)[:-1]
        old = [row for row in rows if row.entry.at < before][:limit]
        for row in old:
            self.tx.delete("event_log", row.id)
            if isinstance(row.entry, RunEvent):
                self.tx.delete("events", row.id)
        return len(old)


def _logged(row: _LogRow) -> LoggedEvent:
    entry = row.entry
    if isinstance(entry, RunEvent):
        return LoggedEvent(
            cursor=EventCursor(0, row.seq),
            id=entry.id,
            kind=run_event_kind(entry.to_status),
            at=entry.at,
            actor=entry.actor,
            task_id=entry.task_id,
            run_id=entry.run_id,
            subject=None,
            from_status=entry.from_status,
            to_status=entry.to_status,
            detail=copy.deepcopy(entry.detail),
        )
    return LoggedEvent(
        cursor=EventCursor(0, row.seq),
        id=entry.id,
        kind=entry.kind,
        at=entry.at,
        actor=entry.actor,
        task_id=entry.task_id,
        run_id=None,
        subject=entry.subject,
        from_status=None,
        to_status=None,
        detail=copy.deepcopy(entry.detail),
    )


class InMemoryDecisionRepository(_Repository):
    async def add(self, decision: SlotDecision) -> None:
        self.tx.insert("decisions", decision)

    async def add_many(self, decisions: Sequence[SlotDecision]) -> None:
        for decision in decisions:
            self.tx.insert("decisions", decision)

    async def list_for_task(self, task_id: str, *, limit: int) -> builtins.list[SlotDecision]:
        rows = [d for d in self.tx.scan("decisions") if d.task_id == task_id]
        rows.sort(key=lambda d: (d.at, d.slot), reverse=True)
        return [_copy(d) for d in rows[:limit]]

    async def for_slot(
        self, task_ids: Sequence[str], slot: datetime
    ) -> builtins.list[SlotDecision]:
        wanted = set(task_ids)
        rows = [d for d in self.tx.scan("decisions") if d.task_id in wanted and d.slot == slot]
        return [_copy(d) for d in sorted(rows, key=lambda d: (d.at, d.id))]

    async def purge(
        self, *, before: datetime, limit: int, after: PurgeKey | None = None
    ) -> PurgeBatch:
        window = sorted(
            (
                d
                for d in self.tx.scan("decisions")
                if d.at < before and (after is None or (d.at, d.id) > after)
            ),
            key=lambda d: (d.at, d.id),
        )[:limit]
        deleted = 0
        for decision in window:
            if not _undecided_dependent(self.tx, decision.task_id, decision.slot, decision.at):
                self.tx.delete("decisions", decision.id)
                deleted += 1
        last = (window[-1].at, window[-1].id) if len(window) == limit else None
        return PurgeBatch(scanned=len(window), last=last, deleted=deleted)


@dataclass(slots=True)
class RunTally:
    """A row of the fake ``run_tallies``: runs of status ``id`` the retention deleted."""

    id: str
    count: int


def _dependents_of(tx: Transaction, task_id: str) -> list[Task]:
    return [t for t in tx.scan("tasks") if task_id in t.depends_on]


def _undecided_dependent(tx: Transaction, task_id: str, slot: datetime, since: datetime) -> bool:
    """As the SQL retention: a dependent (existing by ``since``) without a run or a decision
    for ``slot`` may still read what ``task_id`` did for it."""
    for dependent in _dependents_of(tx, task_id):
        if dependent.created_at > since:
            continue
        has_run = any(
            r.task_id == dependent.id and r.scheduled_for == slot for r in tx.scan("runs")
        )
        has_decision = any(
            d.task_id == dependent.id and d.slot == slot for d in tx.scan("decisions")
        )
        if not has_run and not has_decision:
            return True
    return False


class InMemoryQueueSettingsRepository(_Repository):
    async def get(self, name: str) -> QueueSettings | None:
        found: QueueSettings | None = self.tx.get("queue_settings", name)
        return _copy(found)

    async def get_many(self, names: Sequence[str]) -> builtins.list[QueueSettings]:
        found = [self.tx.get("queue_settings", name) for name in sorted(set(names))]
        return [_copy(row) for row in found if row is not None]

    async def list(self) -> builtins.list[QueueSettings]:
        return sorted((_copy(row) for row in self.tx.scan("queue_settings")), key=lambda q: q.name)

    async def save(self, settings: QueueSettings) -> None:
        if self.tx.get("queue_settings", settings.name) is None:
            self.tx.insert("queue_settings", settings)
        else:
            self.tx.replace("queue_settings", settings)

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        tx = self.tx
        return {
            name
            for name in sorted(set(names))
            if tx.get("queue_settings", name) is not None and tx.lock("queue_settings", name)
        }


class InMemorySharedLimitRepository(_Repository):
    async def get(self, name: str) -> SharedLimit | None:
        found: SharedLimit | None = self.tx.get("shared_limits", name)
        return _copy(found)

    async def get_many(self, names: Sequence[str]) -> builtins.list[SharedLimit]:
        found = [self.tx.get("shared_limits", name) for name in sorted(set(names))]
        return [_copy(row) for row in found if row is not None]

    async def list(self) -> builtins.list[SharedLimit]:
        return sorted((_copy(row) for row in self.tx.scan("shared_limits")), key=lambda x: x.name)

    async def save(self, limit: SharedLimit) -> None:
        if self.tx.get("shared_limits", limit.name) is None:
            self.tx.insert("shared_limits", limit)
        else:
            self.tx.replace("shared_limits", limit)

    async def delete(self, name: str) -> bool:
        if self.tx.get("shared_limits", name) is None:
            return False
        self.tx.delete("shared_limits", name)
        return True

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        tx = self.tx
        return {
            name
            for name in sorted(set(names))
            if tx.get("shared_limits", name) is not None and tx.lock("shared_limits", name)
        }

    async def count_in_flight(self, bound_queues: dict[str, builtins.list[str]]) -> dict[str, int]:
        return self._count_bound(bound_queues, (RunStatus.QUEUED, RunStatus.RUNNING))

    async def count_pending(self, bound_queues: dict[str, builtins.list[str]]) -> dict[str, int]:
        return self._count_bound(bound_queues, (RunStatus.PENDING,))

    def _count_bound(
        self, bound_queues: dict[str, builtins.list[str]], statuses: tuple[RunStatus, ...]
    ) -> dict[str, int]:
        tx = self.tx
        tasks = list(tx.scan("tasks"))
        counts: dict[str, int] = {}
        for name, queues in bound_queues.items():
            bound = {t.id for t in tasks if name in t.limits or t.queue in queues}
            counts[name] = sum(
                1 for run in tx.scan("runs") if run.task_id in bound and run.status in statuses
            )
        return counts

    async def count_in_flight_by_partition(
        self, name: str, queues: Sequence[str], *, by: Partition
    ) -> dict[str, int]:
        tx = self.tx
        bound = {t.id for t in tx.scan("tasks") if name in t.limits or t.queue in queues}
        counts: dict[str, int] = {}
        for run in tx.scan("runs"):
            if run.task_id in bound and run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                key = run.owner_id if by is Partition.OWNER else run.task_id
                counts[key] = counts.get(key, 0) + 1
        return counts

    async def referencing_tasks(self, name: str) -> int:
        return sum(1 for task in self.tx.scan("tasks") if name in task.limits)

    async def referencing_task_names(self, name: str, *, limit: int) -> builtins.list[str]:
        return sorted(task.name for task in self.tx.scan("tasks") if name in task.limits)[:limit]


class InMemoryCircuitRepository(_Repository):
    async def get_many(
        self, names: Sequence[str], *, for_update: bool = False
    ) -> builtins.list[Circuit]:
        found = [self.tx.get("circuits", name) for name in sorted(set(names))]
        return [_copy(row) for row in found if row is not None]

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        tx = self.tx
        return {
            name
            for name in sorted(set(names))
            if tx.get("circuits", name) is not None and tx.lock("circuits", name)
        }

    async def ensure(self, names: Sequence[str], *, now: datetime) -> None:
        for name in sorted(set(names)):
            if self.tx.get("circuits", name) is None:
                self.tx.insert("circuits", Circuit(name=name, updated_at=now))

    async def list(self) -> builtins.list[Circuit]:
        return sorted((_copy(row) for row in self.tx.scan("circuits")), key=lambda c: c.name)

    async def save(self, circuit: Circuit) -> None:
        if self.tx.get("circuits", circuit.name) is None:
            self.tx.insert("circuits", circuit)
        else:
            self.tx.replace("circuits", circuit)


class InMemoryWorkerRepository(_Repository):
    async def add(self, worker: Worker) -> None:
        self.tx.insert("workers", worker)

    async def get(self, worker_id: str) -> Worker | None:
        found: Worker | None = self.tx.get("workers", worker_id)
        return _copy(found)

    async def get_for_update(self, worker_id: str) -> Worker | None:
        return await self.get(worker_id)

    async def update(self, worker: Worker) -> None:
        if self.tx.get("workers", worker.id) is None:
            raise NotFound(f"worker {worker.id} not found", field="id")
        self.tx.replace("workers", worker)

    async def list(self, *, status: WorkerStatus | None = None) -> builtins.list[Worker]:
        rows = [w for w in self.tx.scan("workers") if status is None or w.status is status]
        return [_copy(w) for w in sorted(rows, key=lambda w: (w.name, w.id))]

    async def offline_since_before(self, cutoff: datetime, *, limit: int) -> builtins.list[Worker]:
        rows = [
            w
            for w in self.tx.scan("workers")
            if w.status is WorkerStatus.OFFLINE and w.heartbeat_at < cutoff
        ]
        return [_copy(w) for w in sorted(rows, key=lambda w: (w.heartbeat_at, w.id))[:limit]]

    async def delete_offline(self, worker_id: str, *, before: datetime) -> bool:
        found: Worker | None = self.tx.get("workers", worker_id)
        if (
            found is None
            or found.status is not WorkerStatus.OFFLINE
            or found.heartbeat_at >= before
        ):
            return False
        self.tx.delete("workers", worker_id)
        return True


@dataclass
class _MemberRow:
    id: str
    membership: Membership


class InMemoryTeamRepository(_Repository):
    async def add(self, team: Team) -> None:
        self.tx.insert("teams", team)

    async def get(self, team_id: str) -> Team | None:
        found: Team | None = self.tx.get("teams", team_id)
        return _copy(found)

    async def get_by_name(self, name: str) -> Team | None:
        for team in self.tx.scan("teams"):
            if team.name == name:
                return _copy(team)  # type: ignore[no-any-return]
        return None

    async def delete(self, team_id: str) -> None:
        for row in list(self.tx.scan("team_members")):
            if row.membership.team_id == team_id:
                self.tx.delete("team_members", row.id)
        self.tx.delete("teams", team_id)

    async def of_user(self, user_id: str) -> builtins.list[tuple[Team, TeamRole]]:
        found = []
        for row in self.tx.scan("team_members"):
            if row.membership.user_id == user_id:
                team = self.tx.get("teams", row.membership.team_id)
                if team is not None:
                    found.append((_copy(team), row.membership.role))
        return sorted(found, key=lambda pair: pair[0].name)

    async def roles_of(self, user_id: str) -> dict[str, TeamRole]:
        return {
            row.membership.team_id: row.membership.role
            for row in self.tx.scan("team_members")
            if row.membership.user_id == user_id
        }

    async def members(self, team_id: str) -> builtins.list[Membership]:
        rows = [
            row.membership
            for row in self.tx.scan("team_members")
            if row.membership.team_id == team_id
        ]
        return sorted(rows, key=lambda m: (m.created_at, m.user_id))

    async def set_member(self, membership: Membership) -> None:
        row = _MemberRow(f"{membership.team_id}:{membership.user_id}", membership)
        if self.tx.get("team_members", row.id) is None:
            self.tx.insert("team_members", row)
        else:
            self.tx.replace("team_members", row)

    async def remove_member(self, team_id: str, user_id: str) -> bool:
        key = f"{team_id}:{user_id}"
        if self.tx.get("team_members", key) is None:
            return False
        self.tx.delete("team_members", key)
        return True


class InMemoryUserRepository(_Repository):
    async def add(self, user: User) -> None:
        self.tx.insert("users", user)

    async def get(self, user_id: str) -> User | None:
        found: User | None = self.tx.get("users", user_id)
        return _copy(found)

    async def get_by_username(self, username: str) -> User | None:
        for user in self.tx.scan("users"):
            if user.username == username:
                return _copy(user)  # type: ignore[no-any-return]
        return None

    async def list(self, *, limit: int, cursor: str | None = None) -> Page[User]:
        rows: list[User] = list(self.tx.scan("users"))
        return _page_by_id(rows, limit=limit, cursor=cursor, key=lambda u: u.id)

    async def update(self, user: User) -> None:
        current: User | None = self.tx.get("users", user.id)
        if current is None:
            raise NotFound(f"user {user.id} not found", field="id")
        written = _copy(user)
        written.token_generation = current.token_generation
        self.tx.replace("users", written)

    async def bump_token_generation(self, user_id: str) -> int:
        current: User | None = self.tx.get("users", user_id)
        if current is None:
            raise NotFound(f"user {user_id} not found", field="id")
        generation = current.token_generation + 1
        self.tx.patch("users", user_id, {"token_generation": generation})
        return generation

    async def count(self) -> int:
        return sum(1 for _ in self.tx.scan("users"))


class InMemoryApiKeyRepository(_Repository):
    async def add(self, key: ApiKey) -> None:
        self.tx.insert("api_keys", key)

    async def get(self, key_id: str) -> ApiKey | None:
        found: ApiKey | None = self.tx.get("api_keys", key_id)
        return _copy(found)

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        for key in self.tx.scan("api_keys"):
            if key.prefix == prefix:
                return _copy(key)  # type: ignore[no-any-return]
        return None

    async def list(self, *, owner_id: str | None = None) -> builtins.list[ApiKey]:
        rows = [k for k in self.tx.scan("api_keys") if owner_id is None or k.owner_id == owner_id]
        return [_copy(k) for k in sorted(rows, key=lambda k: k.id)]

    async def update(self, key: ApiKey) -> None:
        if self.tx.get("api_keys", key.id) is None:
            raise NotFound(f"api key {key.id} not found", field="id")
        self.tx.replace("api_keys", key)

    async def touch(self, key_id: str, *, now: datetime) -> None:
        found: ApiKey | None = self.tx.get("api_keys", key_id)
        if found is not None:
            touched = _copy(found)
            touched.last_used_at = now
            self.tx.replace("api_keys", touched)


class InMemoryBulkOperationRepository(_Repository):
    async def add(self, operation: BulkOperation) -> None:
        self.tx.insert("bulk_operations", operation)

    async def get(self, operation_id: str) -> BulkOperation | None:
        found: BulkOperation | None = self.tx.get("bulk_operations", operation_id)
        return _copy(found)

    async def update(self, operation: BulkOperation) -> None:
        if self.tx.get("bulk_operations", operation.id) is None:
            raise NotFound(f"operation {operation.id} not found", field="id")
        self.tx.replace("bulk_operations", operation)

    async def take_stale(
        self, *, stale_before: datetime, now: datetime, limit: int
    ) -> builtins.list[BulkOperation]:
        taken: list[BulkOperation] = []
        for operation in list(self.tx.scan("bulk_operations")):
            if len(taken) >= limit:
                break
            heartbeat = operation.heartbeat_at
            if operation.finished or (heartbeat is not None and heartbeat >= stale_before):
                continue
            if not self.tx.lock("bulk_operations", operation.id):
                continue  # another caller is taking it (SKIP LOCKED)
            self.tx.patch("bulk_operations", operation.id, {"heartbeat_at": now})
            copied = _copy(operation)
            copied.heartbeat_at = now
            taken.append(copied)
        return taken


class InMemoryRefreshTokenRepository(_Repository):
    async def add(self, token: RefreshToken) -> None:
        self.tx.insert("refresh_tokens", token)

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        for token in self.tx.scan("refresh_tokens"):
            if token.token_hash == token_hash:
                return _copy(token)  # type: ignore[no-any-return]
        return None

    async def update(self, token: RefreshToken) -> None:
        if self.tx.get("refresh_tokens", token.id) is None:
            raise NotFound(f"refresh token {token.id} not found", field="id")
        self.tx.replace("refresh_tokens", token)

    async def revoke_family(self, family_id: str, *, now: datetime) -> int:
        tx = self.tx
        revoked = 0
        for token in list(tx.scan("refresh_tokens")):
            if token.family_id == family_id and token.revoked_at is None:
                tx.patch("refresh_tokens", token.id, {"revoked_at": now})
                revoked += 1
        return revoked

    async def mark_used(self, token_id: str, *, now: datetime) -> bool:
        tx = self.tx
        current: RefreshToken | None = tx.get("refresh_tokens", token_id)
        if current is None or current.used_at is not None or current.revoked_at is not None:
            return False
        if not tx.lock("refresh_tokens", token_id):
            return False
        tx.patch(
            "refresh_tokens",
            token_id,
            {"used_at": now},
            condition=lambda row: row.used_at is None and row.revoked_at is None,
        )
        return True

    async def revoke_for_user(self, user_id: str, *, now: datetime) -> int:
        tx = self.tx
        revoked = 0
        for token in list(tx.scan("refresh_tokens")):
            if token.user_id == user_id and token.revoked_at is None:
                tx.patch("refresh_tokens", token.id, {"revoked_at": now})
                revoked += 1
        return revoked


__all__ = [
    "InMemoryApiKeyRepository",
    "InMemoryDecisionRepository",
    "InMemoryRefreshTokenRepository",
    "InMemoryRunEventRepository",
    "InMemoryRunRepository",
    "InMemoryTaskRepository",
    "InMemoryUserRepository",
    "InMemoryWorkerRepository",
]


class InMemoryTemplateRepository(_Repository):
    async def add(self, template: Template) -> None:
        self.tx.insert("templates", template)

    async def get(self, template_id: str, *, for_update: bool = False) -> Template | None:
        if for_update:
            self.tx.lock("templates", template_id)
        found: Template | None = self.tx.get("templates", template_id)
        return _copy(found)

    async def get_by_name(self, name: str) -> Template | None:
        for template in self.tx.scan("templates"):
            if template.name == name:
                return _copy(template)  # type: ignore[no-any-return]
        return None

    async def list(self, *, limit: int, cursor: str | None = None) -> Page[Template]:
        rows: list[Template] = list(self.tx.scan("templates"))
        return _page_by_id(rows, limit=limit, cursor=cursor, key=lambda t: t.id)

    async def update(self, template: Template, *, expected_version: int) -> None:
        _versioned_update(self.tx, "templates", template, expected_version)

    async def delete(self, template_id: str) -> None:
        if self.tx.get("templates", template_id) is not None:
            self.tx.delete("templates", template_id)
