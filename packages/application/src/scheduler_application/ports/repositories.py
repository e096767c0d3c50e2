"""Repository ports. Repositories add, read and write rows inside the unit of work's
transaction; they never commit. Writes that race other processes are conditional: ``update``
takes the version the caller read and raises :class:`~scheduler_application.errors.Conflict`
when the stored row has moved on."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from scheduler_application.operations.bulk_operations import BulkOperation
from scheduler_domain.accounts import ApiKey, RefreshToken, Role, User
from scheduler_domain.circuits import Circuit
from scheduler_domain.events import EventCursor, EventRecord, LoggedEvent, RunEvent, SlotDecision
from scheduler_domain.queue_settings import QueueSettings
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.shared_limits import Partition, SharedLimit
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.teams import Membership, Team, TeamRole
from scheduler_domain.template import Template
from scheduler_domain.worker import Worker, WorkerStatus

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated list; pass ``next_cursor`` back to get the next one."""

    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFilter:
    #: Created by this user.
    owner_id: str | None = None
    #: Of one of these teams (the caller's scope; None: every team's).
    team_ids: frozenset[str] | None = None
    enabled: bool | None = None
    queue: str | None = None
    name_prefix: str | None = None
    #: Only the subscriptions of this template.
    template_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    owner_id: str | None = None
    #: Of one of these teams (the caller's scope; None: every team's).
    team_ids: frozenset[str] | None = None
    task_id: str | None = None
    statuses: frozenset[RunStatus] = field(default_factory=frozenset)
    trigger: RunTrigger | None = None
    worker_id: str | None = None
    #: The queue the run was published to (its task's, or a worker's direct ``worker.<id>``).
    queue: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


#: Where a retention walk stopped: the (instant, id) of the last row it looked at.
PurgeKey = tuple[datetime, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeBatch:
    """One retention batch: how many rows it looked at, where it stopped (the keyset of the
    next batch; None when it reached the end), and what it deleted (runs by status)."""

    scanned: int
    last: PurgeKey | None
    deleted: int
    by_status: dict[RunStatus, int] = field(default_factory=dict)


class TaskRepository(Protocol):
    async def add(self, task: Task) -> None: ...

    async def get(self, task_id: str, *, for_update: bool = False) -> Task | None:
        """``for_update``: lock the row for this transaction, waiting for one that holds it
        (a firing dispatcher), so what is read is what that transaction left."""
        ...

    async def get_many(self, task_ids: Sequence[str]) -> list[Task]: ...

    async def get_by_name(self, owner_id: str, name: str) -> Task | None:
        """The creator's task of that name (the oldest when it has one in several teams)."""
        ...

    async def get_in_team(self, team_id: str, name: str) -> Task | None:
        """The team's task named ``name``: names are unique within a team."""
        ...

    async def with_name(self, name: str) -> builtins.list[Task]:
        """Every team's tasks named ``name`` (names are unique per team only)."""
        ...

    async def list(
        self, task_filter: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> Page[Task]:
        """Tasks in id order (creation order)."""
        ...

    async def count(self, task_filter: TaskFilter) -> int:
        """How many tasks ``list`` would page through with this filter."""
        ...

    async def update(self, task: Task, *, expected_version: int) -> None:
        """Write every field of ``task`` if the stored version is still ``expected_version``.
        ``task.version`` is written as given: the caller has already bumped it."""
        ...

    async def update_many(self, writes: Sequence[tuple[Task, int]]) -> None:
        """:meth:`update` of each ``(task, expected_version)``, in a few statements whatever
        their number where the database allows (a template change rewrites every
        subscription). Conflict, naming a task whose version moved or that is gone, leaves
        the others possibly written: the caller's transaction is to be rolled back."""
        ...

    async def delete(self, task_id: str) -> None:
        """Remove the task with its runs, their events and its slot decisions (cascade)."""
        ...

    async def due(
        self, now: datetime, *, limit: int, ahead_until: datetime | None = None
    ) -> builtins.list[Task]:
        """Enabled tasks whose ``next_run_at`` has come — or, for tasks that fire ahead
        (:attr:`Task.fires_ahead`), comes by ``ahead_until`` — oldest first, locked for this
        transaction; rows another transaction holds are skipped (``SKIP LOCKED``)."""
        ...

    async def next_due_at(self, *, ahead: timedelta = timedelta(0)) -> datetime | None:
        """When the dispatcher has something to claim: the earliest ``next_run_at`` of an
        enabled task, less ``ahead`` for tasks that fire ahead. How long it may sleep."""
        ...

    async def set_next_run_at(self, task_id: str, next_run_at: datetime | None) -> None:
        """Advance the schedule without bumping ``version`` (user edits must not conflict)."""
        ...

    async def set_next_run_at_many(self, changes: Sequence[tuple[str, datetime | None]]) -> None:
        """:meth:`set_next_run_at` for many tasks, in one round trip where the database allows
        (the dispatcher advances a whole batch of fired tasks at once)."""
        ...

    async def dependents(self, task_id: str) -> builtins.list[Task]:
        """Tasks that list ``task_id`` in ``depends_on``."""
        ...

    async def dependency_edges(self) -> dict[str, tuple[str, ...]]:
        """Every task that has upstreams, mapped to them: the graph cycle checks walk."""
        ...

    async def queue_names(self) -> builtins.list[str]:
        """The distinct queue names tasks route to, sorted (the API's queue overview)."""
        ...

    async def with_template(self, template_id: str) -> builtins.list[Task]:
        """Every task made from the template (its subscriptions), locked for this transaction
        (``FOR UPDATE``): a template change rewrites them all in the one transaction."""
        ...

    async def lock_many(self, task_ids: Sequence[str]) -> set[str]:
        """Lock these tasks' rows until the transaction ends, skipping rows another
        transaction holds (``FOR UPDATE SKIP LOCKED``); returns the ids locked. Serialises the
        dispatcher's decisions about one task (max_concurrent, dependency resolution) across
        dispatchers without ever waiting."""
        ...


class TemplateRepository(Protocol):
    """Templates (task types); names are unique."""

    async def add(self, template: Template) -> None:
        """AlreadyExists (field ``name``) when the name is taken."""
        ...

    async def get(self, template_id: str, *, for_update: bool = False) -> Template | None: ...

    async def get_by_name(self, name: str) -> Template | None: ...

    async def list(self, *, limit: int, cursor: str | None = None) -> Page[Template]:
        """Templates in id order."""
        ...

    async def update(self, template: Template, *, expected_version: int) -> None:
        """Write every field if the stored version is still ``expected_version`` (Conflict
        otherwise); ``template.version`` is written as given."""
        ...

    async def delete(self, template_id: str) -> None: ...


class RunRepository(Protocol):
    async def add(self, run: TaskRun, *, events: Sequence[RunEvent] = ()) -> None:
        """Insert a new run, and with it its first ``events`` (its creation, and whatever the
        creating use case decided about it) — in one statement where the database allows.
        :class:`~scheduler_application.errors.AlreadyExists` when ``(task_id, scheduled_for,
        attempt)`` or ``(task_id, idempotency_key)`` is taken; no event is written then."""
        ...

    async def add_new_many(
        self, runs: Sequence[TaskRun], *, events: Sequence[RunEvent] = ()
    ) -> set[str]:
        """Insert the runs whose keys are free and skip the others (no error: the caller
        learns which from the ids returned); of ``events``, only those of inserted runs are
        written, in order. A few round trips for the whole batch (the dispatcher fires a batch
        of due tasks at once)."""
        ...

    async def get(self, run_id: str) -> TaskRun | None: ...

    async def move_to_team(self, task_id: str, team_id: str) -> int:
        """Give every run of the task to ``team_id`` (the task moved); how many rows changed.
        Neither the version nor anything else of a run changes."""
        ...

    async def get_by_idempotency_key(self, task_id: str, key: str) -> TaskRun | None: ...

    async def get_by_idempotency_keys(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], TaskRun]:
        """The runs named by ``(task_id, idempotency_key)`` pairs, by pair, in one read; pairs
        that name no run are left out."""
        ...

    async def update(self, run: TaskRun, *, expected_version: int) -> None:
        """Write ``run`` if the stored version is still ``expected_version``, else Conflict.
        ``run.version`` is written as given (the run's transitions bump it themselves)."""
        ...

    async def claim(
        self, run_id: str, *, worker_id: str, now: datetime, lease: timedelta
    ) -> TaskRun | None:
        """Atomically move a *queued* run to running for ``worker_id`` and bump its version
        (the new fencing token). None when the run is not queued any more: another worker won,
        or it was cancelled. Safe under any number of concurrent callers."""
        ...

    async def claim_next(
        self, *, queues: Sequence[str], worker_id: str, now: datetime, lease: timedelta
    ) -> TaskRun | None:
        """Claim the most urgent queued run of ``queues`` (priority, then age), or None."""
        ...

    async def renew_lease(
        self, run_id: str, *, worker_id: str, token: int, now: datetime, lease: timedelta
    ) -> bool:
        """Extend the lease if ``worker_id`` holds the run, running under ``token``; False
        otherwise (a run another worker holds is never renewed, whatever the token)."""
        ...

    async def list(
        self, run_filter: RunFilter, *, limit: int, cursor: str | None = None
    ) -> Page[TaskRun]:
        """Newest first."""
        ...

    async def count(self, run_filter: RunFilter) -> int:
        """How many runs ``list`` would page through with this filter."""
        ...

    async def active_for_task(self, task_id: str) -> builtins.list[TaskRun]:
        """Runs of the task that are pending, queued or running."""
        ...

    async def for_logical_time(
        self, task_ids: Sequence[str], scheduled_for: datetime
    ) -> builtins.list[TaskRun]:
        """Every attempt of the given tasks for one logical time (dependency resolution)."""
        ...

    async def pending_due(self, now: datetime, *, limit: int) -> builtins.list[TaskRun]:
        """Pending runs whose ``not_before`` has passed, locked, skipping locked rows."""
        ...

    async def expired_leases(self, now: datetime, *, limit: int) -> builtins.list[TaskRun]:
        """Running runs whose lease expired, locked, skipping locked rows."""
        ...

    async def stale_queued(self, queued_before: datetime, *, limit: int) -> builtins.list[TaskRun]:
        """Runs queued before ``queued_before`` and never claimed (their message may be lost)."""
        ...

    async def held_past_due(self, due_before: datetime, *, limit: int) -> builtins.list[TaskRun]:
        """Runs fired ahead (queued before their ``not_before``), still queued, whose
        ``not_before`` is before ``due_before``: a broker message the dispatcher that fired
        them held may have died with it. Soonest ``not_before`` first."""
        ...

    async def count_queued(self, queues: Sequence[str]) -> dict[str, int]:
        """Runs queued (published, not yet claimed), per queue; queues with none are left out."""
        ...

    async def running_on_worker(self, worker_id: str) -> builtins.list[TaskRun]: ...

    async def count_by_status(self) -> dict[RunStatus, int]:
        """Runs by status, those the retention deleted included (absent means zero)."""
        ...

    async def purge_finished(
        self,
        *,
        before: datetime,
        statuses: Collection[RunStatus],
        limit: int,
        after: PurgeKey | None = None,
    ) -> PurgeBatch:
        """Look at the next ``limit`` runs in ``statuses`` finished before ``before`` (oldest
        first, past the keyset ``after``) and delete those no dependent may still read, with
        their events, adding them to the tallies :meth:`count_by_status` reports. A run is kept
        when its dependents were not resolved yet, or when a dependent (that existed when it
        finished) has neither a run nor a decision for its logical time."""
        ...

    async def queue_activity(self, since: datetime) -> builtins.list[QueueActivity]:
        """Per queue: runs pending, queued and running now, and runs created and finished at or
        after ``since``. Queues with none of these are left out; sorted by queue name."""
        ...

    async def count_in_flight(self, task_ids: Sequence[str]) -> dict[str, int]:
        """Runs queued or running, per task; tasks with none are left out."""
        ...

    async def latest_statuses(
        self, task_ids: Sequence[str], *, per_task: int
    ) -> dict[str, builtins.list[tuple[str, RunStatus]]]:
        """The newest ``per_task`` runs of each task as ``(run id, status)``, newest first
        (by creation); tasks without runs are left out. Reads no output or result."""
        ...

    async def pending_due_excluding(
        self,
        now: datetime,
        *,
        limit: int,
        exclude_task_ids: Sequence[str],
        exclude_queues: Sequence[str] = (),
    ) -> builtins.list[TaskRun]:
        """:meth:`pending_due` leaving out the runs of ``exclude_task_ids`` (tasks at their
        ``max_concurrent``) and of ``exclude_queues`` (paused, or at their
        ``max_concurrency``), so their backlog never hides other runs."""
        ...

    async def pending_among(self, run_ids: Sequence[str], now: datetime) -> builtins.list[TaskRun]:
        """Those of ``run_ids`` that are pending with ``not_before`` passed (or none), in
        :meth:`pending_due` order, locked, skipping rows another transaction holds."""
        ...

    async def queued_in(self, queues: Sequence[str], *, limit: int) -> builtins.list[TaskRun]:
        """Queued runs published to one of ``queues``, oldest queued first, locked, skipping
        rows another transaction holds (re-dispatch of a dead worker's direct queue)."""
        ...

    async def finished_upstream_runs(
        self, *, since: datetime, limit: int
    ) -> builtins.list[TaskRun]:
        """Runs of tasks that other tasks depend on, in a terminal status (succeeded,
        dead_lettered, cancelled), finished at or after ``since``, whose dependents are not
        resolved yet; earliest finished first, locked, skipping rows another transaction
        holds. Runs of tasks without dependents are never read."""
        ...

    async def mark_dependents_resolved(self, run_ids: Sequence[str], *, at: datetime) -> None:
        """Record that the dependents of these runs were evaluated (no version bump)."""
        ...

    # -- batched forms of the hot path (one statement for many runs) ---------------------------

    async def claim_many(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[TaskRun]:
        """:meth:`claim` for several runs in one statement: each of ``run_ids`` that is still
        queued moves to running for ``worker_id`` with its version bumped; the others (not
        queued any more, missing, duplicates in ``run_ids``) are left out. In id order."""
        ...

    async def start_many(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[tuple[TaskRun, Task | None]]:
        """:meth:`claim_many`, with what a worker's claim needs besides in the same round trip:
        each claimed run's :meth:`TaskRun.claim_event` stored, and its task read (None if
        the task is gone). In run id order. The worker's claim path (PostgreSQL: one
        statement instead of a claim, a read of the tasks and an insert of the events)."""
        ...

    async def start_many_owned(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[tuple[TaskRun, Task | None, Role | None]]:
        """:meth:`start_many` with each task's owner's current role (None when the task or
        its owner is gone), read with the rest: in one statement where the database allows
        it, so that a start that commits on its own (a statement unit of work) leaves the
        executor policy nothing to read after it."""
        ...

    async def get_many(self, run_ids: Sequence[str]) -> builtins.list[TaskRun]:
        """The runs among ``run_ids`` that exist, in id order (each once)."""
        ...

    async def update_many(
        self,
        writes: Sequence[tuple[TaskRun, int]],
        *,
        fields: Collection[str] | None = None,
        events: Sequence[RunEvent] = (),
    ) -> None:
        """:meth:`update` for several ``(run, expected_version)`` pairs in one statement.
        With ``fields`` (``TaskRun`` attribute names) only those columns are written and the
        others keep what is stored — a lease renewal that landed since the read is not undone.
        ``events`` are stored with them, in order (in the same statement where it can: what
        ``RunEventRepository.add_many`` would store).
        :class:`~scheduler_application.errors.Conflict` when any run moved on or is gone: the
        caller must then roll back, since the other runs (and the events) may have been
        written."""
        ...

    async def update_each(
        self,
        writes: Sequence[tuple[TaskRun, int]],
        *,
        fields: Collection[str] | None = None,
        events: Sequence[RunEvent] = (),
    ) -> set[str]:
        """:meth:`update_many`, each run on its own: the ids of the runs written, each with
        its events (``events`` are of these runs only), while a run that moved on or is gone
        is left, its events with it, and fails none of the others. On PostgreSQL one statement,
        atomic on its own (a statement unit of work runs it)."""
        ...

    async def renew_leases(
        self, held: Sequence[tuple[str, int]], *, worker_id: str, now: datetime, lease: timedelta
    ) -> set[str]:
        """:meth:`renew_lease` for several ``(run_id, token)`` pairs of ``worker_id`` in one
        statement; returns the ids renewed (the rest are not running under that token any
        more, or are held by another worker)."""
        ...

    async def append_output(
        self, run_id: str, text: str, *, worker_id: str, token: int, limit: int
    ) -> bool:
        """Add ``text`` to the stored output of a run ``worker_id`` holds ``running`` under
        ``token``, as long as the output stays within ``limit`` characters; the version is not
        bumped (the outcome, which stores the whole output, replaces it). False when nothing
        was written."""
        ...

    async def still_held(self, held: Sequence[tuple[str, int]], *, worker_id: str) -> set[str]:
        """Of these ``(run_id, token)`` pairs, the ids still ``running`` under that token by
        ``worker_id``; reads only (a primary-key lookup per id), so a worker can ask often."""
        ...

    async def waiting_in_queues(
        self, queues: Sequence[str], *, statuses: Sequence[RunStatus], limit: int
    ) -> builtins.list[TaskRun]:
        """Up to ``limit`` runs in ``statuses`` (pending and/or queued) of these queues, oldest
        first, locked (skipping rows another transaction holds). A run counts as in a queue
        when its ``queue`` is that queue or its task's ``queue`` is (a run routed to a worker's
        direct queue still belongs to its task's queue)."""
        ...

    async def count_in_flight_by_queue(self, queues: Sequence[str]) -> dict[str, int]:
        """Runs queued or running per task queue (a run in a worker's direct queue counts for
        its task's queue): what ``max_concurrency`` of a queue caps."""
        ...

    async def pending_fair(
        self, now: datetime, *, queues: Sequence[str], limit: int
    ) -> builtins.list[TaskRun]:
        """Up to ``limit`` pending runs due by ``now`` of these (``fair``) queues, in turns:
        highest priority first, then each fairness key's (the task's ``fairness_key``, else its
        owner) oldest run before any key's second, and so on; locked, skipping rows another
        transaction holds."""
        ...

    async def count_in_flight_by_fair_key(
        self, queues: Sequence[str]
    ) -> dict[tuple[str, str], int]:
        """Runs queued or running per (task queue, fairness key): what a ``fair`` queue's
        ``fair_in_flight`` caps."""
        ...


class SharedLimitRepository(Protocol):
    """Named shared limits (:class:`~scheduler_domain.shared_limits.SharedLimit`)."""

    async def get(self, name: str) -> SharedLimit | None: ...

    async def get_many(self, names: Sequence[str]) -> builtins.list[SharedLimit]: ...

    async def list(self) -> builtins.list[SharedLimit]: ...

    async def save(self, limit: SharedLimit) -> None:
        """Insert or replace the limit's row."""
        ...

    async def delete(self, name: str) -> bool:
        """Remove the limit; False when there was none. References to it are the caller's
        business (:class:`~scheduler_application.limits.LimitService` refuses to delete a
        limit still referenced; a name no limit has is ignored by the gates)."""
        ...

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        """Lock these limits' rows (``FOR UPDATE SKIP LOCKED``); the names locked. Serialises
        the dispatchers' decisions about a limit's ``max_concurrency``."""
        ...

    async def count_in_flight(self, bound_queues: dict[str, builtins.list[str]]) -> dict[str, int]:
        """Per limit name (the keys), the runs queued or running of tasks that reference it
        or whose queue is among its ``bound_queues`` (the queues whose settings reference it)."""
        ...

    async def count_pending(self, bound_queues: dict[str, builtins.list[str]]) -> dict[str, int]:
        """Like :meth:`count_in_flight`, for the runs still ``pending``: while the limit's
        circuit is open, the runs it holds."""
        ...

    async def count_in_flight_by_partition(
        self, name: str, queues: Sequence[str], *, by: Partition
    ) -> dict[str, int]:
        """The limit's runs queued or running (as :meth:`count_in_flight` counts them) per
        owner or per task."""
        ...

    async def referencing_tasks(self, name: str) -> int:
        """How many tasks reference the limit."""
        ...

    async def referencing_task_names(self, name: str, *, limit: int) -> builtins.list[str]:
        """The names of up to ``limit`` tasks that reference the limit, in name order."""
        ...


class CircuitRepository(Protocol):
    """Circuit breakers' shared state (:class:`~scheduler_domain.circuits.Circuit`); a circuit
    that has no row is closed with no failures."""

    async def get_many(
        self, names: Sequence[str], *, for_update: bool = False
    ) -> builtins.list[Circuit]:
        """The stored circuits among ``names``; ``for_update`` locks them (waiting for another
        transaction's lock) so that two processes' outcomes are counted one after the other."""
        ...

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        """Lock these circuits' rows, skipping rows another transaction holds; the names locked."""
        ...

    async def ensure(self, names: Sequence[str], *, now: datetime) -> None:
        """Create closed rows for the circuits among ``names`` that have none (a concurrent
        creation is no error)."""
        ...

    async def list(self) -> builtins.list[Circuit]: ...

    async def save(self, circuit: Circuit) -> None:
        """Insert or replace the circuit's row."""
        ...


class QueueSettingsRepository(Protocol):
    """Stored queue settings (:class:`~scheduler_domain.queue_settings.QueueSettings`), one row
    per queue that has any; the repository never commits."""

    async def get(self, name: str) -> QueueSettings | None: ...

    async def get_many(self, names: Sequence[str]) -> builtins.list[QueueSettings]: ...

    async def list(self) -> builtins.list[QueueSettings]: ...

    async def save(self, settings: QueueSettings) -> None:
        """Insert or replace the queue's row."""
        ...

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        """Lock these queues' rows until the transaction ends, skipping rows another
        transaction holds (``FOR UPDATE SKIP LOCKED``); the names locked. Serialises the
        dispatchers' decisions about one queue's ``max_concurrency``, and a pause against them."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EventQuery:
    """Which entries of the event log to read: those strictly after ``after``, and, when set,
    only those visible to a reader of the teams ``team_ids`` (their tasks' events, and those
    recorded for the team of a task since deleted) who is ``owner_id`` (the records it owns),
    of one task, one run, with one of ``statuses`` (run transitions) or one of ``kinds``.
    ``team_ids`` None: every entry (a reader who sees everything)."""

    after: EventCursor
    team_ids: frozenset[str] | None = None
    owner_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    kinds: tuple[str, ...] = ()


class RunEventRepository(Protocol):
    """The run transitions and, in the same ordered log, every :class:`EventRecord`.

    The log is read with a cursor that never skips nor repeats an entry, whatever order the
    writing transactions commit in: :meth:`read_log` returns only entries no transaction still
    in progress can come before (on PostgreSQL, those written by transactions older than the
    oldest one still running; on SQLite, which has one writer at a time, every committed one),
    in cursor order."""

    async def add(self, event: RunEvent) -> None: ...

    async def add_many(self, events: Sequence[RunEvent]) -> None: ...

    async def list_for_run(self, run_id: str) -> list[RunEvent]:
        """Oldest first."""
        ...

    async def record(self, record: EventRecord) -> None:
        """Append a non-run entry, in the unit of work's transaction."""
        ...

    async def record_many(self, records: Sequence[EventRecord]) -> None:
        """:meth:`record` of each, in log order, in a few statements whatever their number."""
        ...

    async def read_log(self, query: EventQuery, *, limit: int) -> list[LoggedEvent]:
        """At most ``limit`` entries after ``query.after``, in cursor order."""
        ...

    async def log_head(self) -> EventCursor:
        """The cursor of the last entry :meth:`read_log` may serve now (``LOG_START`` if
        none): what "from now on" starts after, and what a change notifier watches."""
        ...

    async def prune(self, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the oldest entries stamped before ``before``; the count.
        The newest entry is always kept (SQLite would otherwise reuse its number)."""
        ...


class DecisionRepository(Protocol):
    async def add(self, decision: SlotDecision) -> None: ...

    async def add_many(self, decisions: Sequence[SlotDecision]) -> None:
        """Insert many decisions in one round trip where the database allows."""
        ...

    async def list_for_task(self, task_id: str, *, limit: int) -> list[SlotDecision]:
        """Newest first."""
        ...

    async def for_slot(self, task_ids: Sequence[str], slot: datetime) -> list[SlotDecision]:
        """The decisions about one slot (logical time) of the given tasks, oldest first."""
        ...

    async def purge(
        self, *, before: datetime, limit: int, after: PurgeKey | None = None
    ) -> PurgeBatch:
        """Look at the next ``limit`` decisions taken before ``before`` (oldest first, past
        ``after``) and delete them, except one about (task, slot) while a dependent of the task
        (that existed when it was taken) has neither a run nor a decision for that slot: the
        fan-in may read it."""
        ...


class WorkerRepository(Protocol):
    async def add(self, worker: Worker) -> None: ...

    async def get(self, worker_id: str) -> Worker | None: ...

    async def get_for_update(self, worker_id: str) -> Worker | None:
        """:meth:`get`, holding the row until the transaction ends (``FOR UPDATE``): a
        heartbeat and an operator's drain or undrain each write the whole row, and must not
        overwrite one another's status."""
        ...

    async def update(self, worker: Worker) -> None: ...

    async def list(self, *, status: WorkerStatus | None = None) -> list[Worker]: ...

    async def offline_since_before(self, cutoff: datetime, *, limit: int) -> builtins.list[Worker]:
        """Up to ``limit`` offline workers last heard of before ``cutoff``, oldest first."""
        ...

    async def delete_offline(self, worker_id: str, *, before: datetime) -> bool:
        """Delete the worker if it is still offline and last heard of before ``before`` (a
        worker that came back meanwhile is left alone); True if it was deleted."""
        ...


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """AlreadyExists when the username is taken."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def get_by_username(self, username: str) -> User | None:
        """The user stored under exactly ``username`` (callers pass the canonical form)."""
        ...

    async def list(self, *, limit: int, cursor: str | None = None) -> Page[User]: ...

    async def update(self, user: User) -> None:
        """Write the user, except ``token_generation``: only :meth:`bump_token_generation`
        changes it, so a stale copy written back can never lower it."""
        ...

    async def bump_token_generation(self, user_id: str) -> int:
        """Raise the user's token generation by one, atomically; returns the new generation.
        NotFound when the user does not exist."""
        ...

    async def count(self) -> int: ...


class TeamRepository(Protocol):
    """Teams and their members. A personal team has the id of its user."""

    async def add(self, team: Team) -> None:
        """AlreadyExists (field ``name``) when the name is taken."""
        ...

    async def get(self, team_id: str) -> Team | None: ...

    async def get_by_name(self, name: str) -> Team | None: ...

    async def delete(self, team_id: str) -> None:
        """Remove the team and its memberships (the caller checked it owns no task)."""
        ...

    async def of_user(self, user_id: str) -> builtins.list[tuple[Team, TeamRole]]:
        """The teams ``user_id`` is a member of, with their role, by name."""
        ...

    async def roles_of(self, user_id: str) -> dict[str, TeamRole]:
        """``{team id: role}`` of every membership of ``user_id`` (what a credential carries)."""
        ...

    async def members(self, team_id: str) -> builtins.list[Membership]:
        """The members, oldest first."""
        ...

    async def set_member(self, membership: Membership) -> None:
        """Add the member or change their role."""
        ...

    async def remove_member(self, team_id: str, user_id: str) -> bool:
        """False when they were no member."""
        ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None: ...

    async def get(self, key_id: str) -> ApiKey | None: ...

    async def get_by_prefix(self, prefix: str) -> ApiKey | None: ...

    async def list(self, *, owner_id: str | None = None) -> list[ApiKey]: ...

    async def update(self, key: ApiKey) -> None: ...

    async def touch(self, key_id: str, *, now: datetime) -> None:
        """Set ``last_used_at`` only (a revocation that landed meanwhile stays); a key that is
        gone is no error."""
        ...


class BulkOperationRepository(Protocol):
    async def add(self, operation: BulkOperation) -> None: ...

    async def get(self, operation_id: str) -> BulkOperation | None: ...

    async def update(self, operation: BulkOperation) -> None:
        """Write its progress, status and heartbeat."""
        ...

    async def take_stale(
        self, *, stale_before: datetime, now: datetime, limit: int
    ) -> builtins.list[BulkOperation]:
        """Running operations whose heartbeat is older than ``stale_before`` (their process
        died), each given heartbeat ``now`` so that no other process takes it too (a row lock
        on PostgreSQL, ``SKIP LOCKED``)."""
        ...


class RefreshTokenRepository(Protocol):
    async def add(self, token: RefreshToken) -> None: ...

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None: ...

    async def update(self, token: RefreshToken) -> None: ...

    async def revoke_family(self, family_id: str, *, now: datetime) -> int:
        """Revoke every live token of the family; returns how many were revoked."""
        ...

    async def mark_used(self, token_id: str, *, now: datetime) -> bool:
        """Spend the token: set ``used_at`` only if it is neither used nor revoked yet. False when
        another caller spent or revoked it first (rotation races resolve to exactly one winner)."""
        ...

    async def revoke_for_user(self, user_id: str, *, now: datetime) -> int:
        """Revoke every live token of every family of the user (password reset, disabling)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueActivity:
    """What one queue holds and how busy it was (:meth:`RunRepository.queue_activity`)."""

    queue: str
    pending: int = 0
    queued: int = 0
    running: int = 0
    created: int = 0
    finished: int = 0
    #: When the longest-waiting queued run was queued (None: nothing queued).
    oldest_queued_at: datetime | None = None
