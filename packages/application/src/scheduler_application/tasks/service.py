"""Task use cases: define, inspect, change, pause, resume and delete tasks."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from scheduler_application.accounts.access import (
    Principal,
    can_change,
    can_see,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
    ensure_changeable,
    team_scope,
)
from scheduler_application.accounts.teams import resolve_team
from scheduler_application.errors import AlreadyExists, Conflict, NotFound, PermissionDenied
from scheduler_application.events.log import task_event
from scheduler_application.limits.references import ensure_limits_exist
from scheduler_application.paging import DEFAULT_PAGE_SIZE, page_limit
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.repositories import Page, TaskFilter
from scheduler_application.ports.secrets import SecretBox
from scheduler_application.ports.unit_of_work import (
    ReadUnitOfWorkFactory,
    UnitOfWork,
    UnitOfWorkFactory,
)
from scheduler_application.runs.scheduling import record_paused_slots, record_unfired_at_pause
from scheduler_application.tasks.read_cache import TaskCache
from scheduler_application.tasks.spec import TaskSpec, merge_patch, parse_task_spec, task_to_spec
from scheduler_application.tasks.upstreams import resolve_upstreams
from scheduler_domain.dag import find_cycle
from scheduler_domain.errors import DependencyCycle, ValidationError
from scheduler_domain.events import (
    TASK_CREATED,
    TASK_DELETED,
    TASK_PAUSED,
    TASK_RESUMED,
    TASK_UPDATED,
    SkipReason,
    SlotDecision,
)
from scheduler_domain.executor_policy import ExecutorNotAllowed, ExecutorPolicy
from scheduler_domain.run import RunTrigger
from scheduler_domain.schedules import CronSchedule, next_fire_times, parse_schedule
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task

T = TypeVar("T")

MAX_PREVIEW = 100
#: The most tasks :meth:`TaskService.visible` reads at once (a page of runs names fewer).
MAX_VISIBLE = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePreview:
    """When a task will fire next (in its own time zone) and what happened to recent slots.

    ``day_rule`` says, for a cron schedule, how its day-of-month and day-of-week fields combine
    (crontab's rule: OR only when both are restricted); ``None`` for other schedules.
    """

    task_id: str
    timezone: str
    paused: bool
    next_fire_times: list[datetime]
    recent_decisions: list[SlotDecision]
    day_rule: str | None = None


async def load_visible_task(
    uow: UnitOfWork, task_id: str, principal: Principal, *, for_update: bool = False
) -> Task:
    """The task, or NotFound when it does not exist *or* the caller may not see it."""
    task = await uow.tasks.get(task_id, for_update=for_update)
    if task is None or not can_see(principal, task.team_id):
        raise NotFound(f"task {task_id} not found", field="task_id")
    return task


async def load_changeable_task(
    uow: UnitOfWork, task_id: str, principal: Principal, *, for_update: bool = False
) -> Task:
    """The task, NotFound as :func:`load_visible_task`, PermissionDenied when the caller sees
    it but may not change it (a ``viewer`` of its team)."""
    task = await load_visible_task(uow, task_id, principal, for_update=for_update)
    ensure_changeable(principal, task.team_id, kind="task", object_id=task_id)
    return task


async def writable_team(uow: UnitOfWork, ref: str, principal: Principal) -> str:
    """The id of the team ``ref`` (name or id) names, if the caller may put tasks in it:
    NotFound (field ``team``) for a team they cannot see, PermissionDenied for one where they
    are only a viewer."""
    try:
        team = await resolve_team(uow, ref)
    except NotFound:
        raise NotFound(f"team {ref!r} not found", field="team") from None
    if not can_see(principal, team.id):
        raise NotFound(f"team {ref!r} not found", field="team")
    if not can_change(principal, team.id):
        raise PermissionDenied(
            f"your role in team {team.name} does not let you put tasks in it (editor or admin "
            "needed)"
        )
    return team.id


def _change_kind(before: Task, after: Task) -> str:
    if before.enabled and not after.enabled:
        return TASK_PAUSED
    if not before.enabled and after.enabled:
        return TASK_RESUMED
    return TASK_UPDATED


class TaskService:
    """Pausing is explained like any other skip: the slots a task passes while paused are
    recorded as decisions with reason ``paused`` (and counted on ``observer``) when it is
    resumed, or before any other edit made while it is paused — its ``updated_at`` marks how
    far they are recorded.

    ``secret_box`` seals the values of ``secret_env`` before they are stored; without one
    (no ``secrets.key`` configured) a task that sets a secret is refused, naming the field."""

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        observer: RunObserver = NO_OBSERVER,
        executor_policy: ExecutorPolicy | None = None,
        secret_box: SecretBox | None = None,
        read_uow_factory: ReadUnitOfWorkFactory | None = None,
        task_cache: TaskCache | None = None,
    ) -> None:
        """``executor_policy`` (default: the safe defaults) decides which executor the caller's
        role may give a task, and which python callables a task may name. ``get`` and ``list``
        read through ``read_uow_factory`` (default: ``uow_factory``). ``task_cache``: tasks as
        last read, for ``get`` (see :mod:`~scheduler_application.tasks.read_cache`); the
        changes made here are forgotten in it right after their commit."""
        self._uow_factory = uow_factory
        self._reads = read_uow_factory or uow_factory
        self._clock = clock
        self._observer = observer
        self._policy = executor_policy if executor_policy is not None else ExecutorPolicy()
        self._secret_box = secret_box
        self._cache = task_cache

    async def create(self, spec: TaskSpec | Mapping[str, Any], *, principal: Principal) -> Task:
        ensure_can_write_tasks(principal)
        if not isinstance(spec, TaskSpec):
            spec = parse_task_spec(spec)
        now = self._clock.now()
        task = Task(
            owner_id=principal.subject_id,
            team_id=principal.subject_id,
            created_at=now,
            updated_at=now,
            secret_env=self._sealed({}, spec.secret_env),
            **{**spec.task_fields(), "depends_on": ()},  # names are resolved below
        )
        self._policy.check_known(task.executor)
        self._check_executor(task, principal)
        task.reschedule(now)
        async with self._uow_factory() as uow:
            if spec.team is not None:
                task.team_id = await writable_team(uow, spec.team, principal)
            task.depends_on = await resolve_upstreams(
                uow, principal, spec.depends_on, owner_id=task.owner_id
            )
            task.validate()
            await ensure_limits_exist(uow, task.limits)
            await self._ensure_name_free(uow, task)
            await self._ensure_acyclic(uow, task)
            await uow.tasks.add(task)
            await task_event(uow, TASK_CREATED, task, at=now, actor=principal.actor)
            await uow.commit()
        return task

    async def get(self, task_id: str, *, principal: Principal) -> Task:
        ensure_can_read_tasks(principal)
        cache = self._cache
        if cache is None or not cache.enabled:
            async with self._reads() as uow:
                return await load_visible_task(uow, task_id, principal)
        task = cache.get(task_id)
        if task is None:
            # Concurrent misses share one read; each caller gets its own copy.
            read = await cache.shared(task_id, lambda: self._read_into(cache, task_id))
            task = copy.copy(read) if read is not None else None
        if task is None or not can_see(principal, task.team_id):
            raise NotFound(f"task {task_id} not found", field="task_id")
        return task

    async def show(self, task_id: str, *, principal: Principal, render: Callable[[Task], T]) -> T:
        """``render(get(task_id))``, for an answer that only shows the task: served from the
        task cache, the task is rendered once per cached entry, not for every caller (the
        caller's right to see it is still checked every time). ``render`` must be a pure
        function of the task that changes nothing."""
        ensure_can_read_tasks(principal)
        cache = self._cache
        if cache is None or not cache.enabled:
            return render(await self.get(task_id, principal=principal))
        found = cache.shown(task_id, render)
        if found is None:
            read = await cache.shared(task_id, lambda: self._read_into(cache, task_id))
            if read is not None:
                found = read.team_id, render(read)
        if found is None or not can_see(principal, found[0]):
            raise NotFound(f"task {task_id} not found", field="task_id")
        return found[1]

    async def _read_into(self, cache: TaskCache, task_id: str) -> Task | None:
        epoch = cache.epoch
        async with self._reads() as uow:
            task = await uow.tasks.get(task_id)
        if task is not None:
            cache.put(task, epoch=epoch)
        return task

    def _forget(self, task_id: str) -> None:
        if self._cache is not None:
            self._cache.forget((task_id,))

    async def visible(self, task_ids: Sequence[str], *, principal: Principal) -> dict[str, Task]:
        """The tasks among ``task_ids`` the caller may see, by id, in one read (the others are
        left out, as if they did not exist): what a page of runs shows their tasks by."""
        ensure_can_read_tasks(principal)
        wanted = list(dict.fromkeys(task_ids))[:MAX_VISIBLE]
        if not wanted:
            return {}
        async with self._uow_factory() as uow:
            tasks = await uow.tasks.get_many(wanted)
        return {t.id: t for t in tasks if can_see(principal, t.team_id)}

    async def list(
        self,
        *,
        principal: Principal,
        owner_id: str | None = None,
        team_id: str | None = None,
        enabled: bool | None = None,
        queue: str | None = None,
        name_prefix: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Task]:
        """The tasks of the caller's teams, or every team's for roles that see all; narrowed
        to one creator (``owner_id``) or one team (``team_id``) on request."""
        scope = team_scope(principal)
        teams = scope
        if team_id is not None:
            if scope is not None and team_id not in scope:
                return Page([])
            teams = frozenset({team_id})
        task_filter = TaskFilter(
            owner_id=owner_id,
            team_ids=teams,
            enabled=enabled,
            queue=queue,
            name_prefix=name_prefix,
        )
        async with self._reads() as uow:
            return await uow.tasks.list(task_filter, limit=page_limit(limit), cursor=cursor)

    async def update(
        self,
        task_id: str,
        patch: Mapping[str, Any],
        *,
        principal: Principal,
        expected_version: int | None = None,
    ) -> Task:
        """Change only the keys in ``patch``; the whole task is validated again.

        ``expected_version`` (an ``If-Match``) refuses the edit with Conflict when someone else
        changed the task since the caller read it; the write itself is always version-checked.
        """
        ensure_can_write_tasks(principal)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            # Locked: a pause or a new schedule must see what a firing dispatcher left.
            task = await load_changeable_task(uow, task_id, principal, for_update=True)
            if expected_version is not None and task.version != expected_version:
                raise Conflict(
                    f"task {task_id} is at version {task.version}, not {expected_version}",
                    field="version",
                )
            before = task_to_spec(task)
            if task.template_id is not None:
                await _check_subscription_patch(uow, task, patch)
            spec = parse_task_spec(merge_patch(before, patch))
            paused_slots = await self._record_pause(uow, task, now)
            old_upstreams = set(task.depends_on)
            as_it_was = copy.copy(task)
            fields = spec.task_fields()
            fields["depends_on"] = await resolve_upstreams(
                uow, principal, spec.depends_on, owner_id=task.owner_id, known=old_upstreams
            )
            for name, value in fields.items():
                setattr(task, name, value)
            moved_from = None
            if spec.team is not None:
                team_id = await writable_team(uow, spec.team, principal)
                if team_id != task.team_id:
                    moved_from, task.team_id = task.team_id, team_id
            task.secret_env = self._sealed(task.secret_env, spec.secret_env)
            task.validate()
            # Names it held already are kept as they are (a limit deleted before references
            # were checked must not make the task uneditable).
            await ensure_limits_exist(uow, task.limits, known=as_it_was.limits)
            if task.executor != as_it_was.executor:
                self._policy.check_known(task.executor)
            if task.template_id is None:  # a subscription runs what its template's author chose
                self._check_executor(task, principal)
            if spec.name != before["name"] or moved_from is not None:
                await self._ensure_name_free(uow, task)
            added = [dep for dep in task.depends_on if dep not in old_upstreams]
            if added:
                await self._ensure_acyclic(uow, task)
            timing_changed = (
                task.schedule != as_it_was.schedule or task.enabled != as_it_was.enabled
            )
            if as_it_was.enabled and not task.enabled:
                paused_slots += await record_unfired_at_pause(uow, as_it_was, paused_at=now)
            if timing_changed:
                task.reschedule(now)
            await self._save(uow, task, now, commit=False)
            after = task_to_spec(task)
            changed = sorted(k for k in after if after[k] != before.get(k))
            detail: dict[str, Any] = {"changed": changed}
            if moved_from is not None:
                # Its runs follow it: who may see them is the task's team's business.
                await uow.runs.move_to_team(task.id, task.team_id)
                detail |= {"changed": sorted([*changed, "team"]), "from_team": moved_from}
            await task_event(
                uow,
                _change_kind(as_it_was, task),
                task,
                at=now,
                actor=principal.actor,
                detail=detail,
            )
            if timing_changed:
                await self._settle_fired_ahead(uow, task, now, actor=principal.actor)
            await uow.commit()
        self._forget(task.id)
        self._count_paused(paused_slots)
        return task

    async def pause(self, task_id: str, *, principal: Principal) -> Task:
        ensure_can_write_tasks(principal)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            task = await load_changeable_task(uow, task_id, principal, for_update=True)
            if task.paused:
                return task
            paused_slots = await record_unfired_at_pause(uow, task, paused_at=now)
            task.pause(now)
            await self._save(uow, task, now, commit=False)
            await task_event(uow, TASK_PAUSED, task, at=now, actor=principal.actor)
            await self._settle_fired_ahead(uow, task, now, actor=principal.actor)
            await uow.commit()
        self._forget(task.id)
        self._count_paused(paused_slots)
        return task

    async def resume(self, task_id: str, *, principal: Principal) -> Task:
        """Unpause; the schedule restarts from now. The slots passed while paused do not fire:
        they are recorded as skipped with reason ``paused``, in the same transaction."""
        ensure_can_write_tasks(principal)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            task = await load_changeable_task(uow, task_id, principal)
            if not task.paused:
                return task
            paused_slots = await self._record_pause(uow, task, now)
            task.resume(now)
            await self._save(uow, task, now, commit=False)
            await task_event(uow, TASK_RESUMED, task, at=now, actor=principal.actor)
            await uow.commit()
        self._forget(task.id)
        self._count_paused(paused_slots)
        return task

    async def delete(self, task_id: str, *, principal: Principal) -> None:
        """Delete the task with its runs; refused while other tasks depend on it."""
        ensure_can_write_tasks(principal)
        async with self._uow_factory() as uow:
            task = await load_changeable_task(uow, task_id, principal)
            dependents = await uow.tasks.dependents(task.id)
            if dependents:
                raise Conflict(_dependents_message(task, dependents, principal), field="depends_on")
            # Recorded first: the deletion takes the task's runs and their events with it.
            await task_event(uow, TASK_DELETED, task, at=self._clock.now(), actor=principal.actor)
            await uow.tasks.delete(task.id)
            await uow.commit()
        self._forget(task.id)

    async def schedule_preview(
        self, task_id: str, *, principal: Principal, n: int = 5, decisions: int = 20
    ) -> SchedulePreview:
        """The next ``n`` fire times, in the task's time zone for cron (UTC otherwise)."""
        ensure_can_read_tasks(principal)
        for name, value in (("n", n), ("decisions", decisions)):
            if isinstance(value, bool) or not 0 <= value <= MAX_PREVIEW:
                raise ValidationError(f"{name} must be between 0 and {MAX_PREVIEW}", field=name)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            task = await load_visible_task(uow, task_id, principal)
            recent = (
                await uow.decisions.list_for_task(task.id, limit=decisions) if decisions else []
            )
        zone_name = task.schedule.timezone if isinstance(task.schedule, CronSchedule) else "UTC"
        zone = ZoneInfo(zone_name) if zone_name != "UTC" else UTC
        times = next_fire_times(task.schedule, now, n) if task.schedule is not None else []
        return SchedulePreview(
            task_id=task.id,
            timezone=zone_name,
            paused=task.paused,
            next_fire_times=[t.astimezone(zone) for t in times],
            recent_decisions=recent,
            day_rule=task.schedule.day_rule if isinstance(task.schedule, CronSchedule) else None,
        )

    # -- pauses ----------------------------------------------------------------------------------

    @staticmethod
    async def _record_pause(uow: UnitOfWork, task: Task, now: datetime) -> int:
        """Record the slots a paused task passed since its last write (the pause, or an edit
        made while paused, which recorded the slots before it); 0 for a task not paused."""
        if not task.paused:
            return 0
        return await record_paused_slots(uow, task, paused_at=task.updated_at, resumed_at=now)

    def _count_paused(self, slots: int) -> None:
        """After the commit, like the dispatcher counts its skips."""
        if slots:
            self._observer.slot_skipped(SkipReason.PAUSED.value, slots)

    # -- runs fired ahead --------------------------------------------------------------------

    async def _settle_fired_ahead(
        self, uow: UnitOfWork, task: Task, now: datetime, *, actor: str
    ) -> None:
        """After a pause or a change of schedule, the runs the dispatcher fired ahead of slots
        still to come (``dispatcher.fire_ahead_seconds``): cancelled if the task is paused or
        its schedule no longer has their slot; otherwise kept, and ``next_run_at`` moved past
        them (their slot has fired once already). Called after the task's row was written, so
        that a firing transaction holding the row has committed and its runs are seen."""
        kept: list[datetime] = []
        cancelled = 0
        for run in await uow.runs.active_for_task(task.id):
            if (
                run.trigger is not RunTrigger.SCHEDULE
                or run.scheduled_for <= now
                or run.status not in (RunStatus.PENDING, RunStatus.QUEUED)
            ):
                continue
            if task.enabled and task.schedule is not None and _has_slot(task, run.scheduled_for):
                kept.append(run.scheduled_for)
                continue
            read_version = run.version
            reason = "task paused" if task.paused else "task's schedule changed"
            event = run.cancel(now=now, actor=actor, reason=f"{reason} before the slot")
            try:
                await uow.runs.update(run, expected_version=read_version)
            except Conflict:
                continue
            await uow.events.add(event)
            cancelled += 1
        if kept and task.schedule is not None:
            after = task.schedule.next_after(max(kept))
            if task.next_run_at is not None and (after is None or after > task.next_run_at):
                task.next_run_at = after
                await uow.tasks.set_next_run_at(task.id, after)
        for _ in range(cancelled):
            self._observer.run_finished(status=RunStatus.CANCELLED.value)

    # -- secrets ---------------------------------------------------------------------------------

    def _sealed(
        self, current: Mapping[str, str], changes: Mapping[str, str | None]
    ) -> dict[str, str]:
        """``current`` (sealed values) with ``changes`` (plain values; None removes) applied."""
        sealed = dict(current)
        for name, value in changes.items():
            if value is None:
                sealed.pop(name, None)
                continue
            if self._secret_box is None:
                raise ValidationError(
                    "secret_env cannot be stored: the server has no encryption key; its "
                    "operator must configure secrets.key (SCHEDULER__SECRETS__KEY_FILE)",
                    field="secret_env",
                )
            sealed[name] = self._secret_box.seal(value)
        return sealed

    # -- checks ----------------------------------------------------------------------------------

    def check_executor(
        self, executor: str, params: Mapping[str, Any], principal: Principal
    ) -> None:
        """What ``create`` checks of a task's executor, without creating it: one a worker
        provides (or a configured plugin), and one the caller's role may give a task."""
        self._policy.check_known(executor)
        try:
            self._policy.check(executor, dict(params), principal.role)
        except ExecutorNotAllowed as refused:
            raise PermissionDenied(refused.message, field="executor") from None

    def _check_executor(self, task: Task, principal: Principal) -> None:
        try:
            self._policy.check(task.executor, task.params, principal.role)
        except ExecutorNotAllowed as refused:
            raise PermissionDenied(refused.message, field="executor") from None

    @staticmethod
    async def _save(uow: UnitOfWork, task: Task, now: datetime, *, commit: bool = True) -> None:
        task.touch(now)
        read_version = task.version
        task.version += 1
        await uow.tasks.update(task, expected_version=read_version)
        if commit:
            await uow.commit()

    @staticmethod
    async def _ensure_name_free(uow: UnitOfWork, task: Task) -> None:
        await ensure_name_free_in_team(uow, task)

    @staticmethod
    async def _ensure_acyclic(uow: UnitOfWork, task: Task) -> None:
        """Refuse an edge set with a loop, naming the loop's tasks (``a -> b -> a``)."""
        edges = dict(await uow.tasks.dependency_edges())
        edges[task.id] = tuple(task.depends_on)
        cycle = find_cycle(edges)
        if cycle is None:
            return
        names = {t.id: t.name for t in await uow.tasks.get_many(list(set(cycle)))}
        names[task.id] = task.name
        raise DependencyCycle([names.get(node, node) for node in cycle])


async def ensure_name_free_in_team(uow: UnitOfWork, task: Task) -> None:
    """Task names are unique within a team: AlreadyExists (409) naming ``name`` otherwise. The
    other task may be one the caller cannot see (a team mate's); its name is all it learns."""
    existing = await uow.tasks.get_in_team(task.team_id, task.name)
    if existing is not None and existing.id != task.id:
        raise AlreadyExists(f"the team already has a task named {task.name!r}", field="name")


#: What a subscription's owner may change through the task itself; its params through the
#: subscription (``TemplateService.update_subscription``), the rest only through the template.
SUBSCRIPTION_TASK_FIELDS = frozenset({"name", "enabled", "schedule", "depends_on", "trigger_rule"})


async def _check_subscription_patch(uow: UnitOfWork, task: Task, patch: Mapping[str, Any]) -> None:
    """Refuse a change to what the template decides (setting it to what it is already is no
    change: an exported tasks file applied again names every field)."""
    before = task_to_spec(task)
    merged = merge_patch(before, patch)
    for key in patch:
        if key not in SUBSCRIPTION_TASK_FIELDS and merged.get(key) != before.get(key):
            raise ValidationError(
                f"{key} of a task made from a template is the template's; change the "
                "subscription's params with PATCH /api/v1/subscriptions/{id}",
                field=str(key),
            )
    if "schedule" not in patch or task.template_id is None:
        return
    template = await uow.templates.get(task.template_id)
    if template is None:
        return
    schedule = parse_schedule(patch["schedule"])
    if not template.bounds.allow_custom and schedule != template.schedule:
        raise ValidationError(
            f"template {template.name!r} does not let subscribers choose their schedule",
            field="schedule",
        )
    template.bounds.check(schedule)


def _dependents_message(task: Task, dependents: list[Task], principal: Principal) -> str:
    """Name the dependents the caller may see; only count the others (they stay secret)."""
    visible = sorted(t.name for t in dependents if can_see(principal, t.team_id))
    hidden = len(dependents) - len(visible)
    parts = list(visible)
    if hidden:
        parts.append(f"{hidden} task(s) you cannot see")
    return f"task {task.name!r} cannot be deleted: {', '.join(parts)} depend(s) on it"


def _has_slot(task: Task, instant: datetime) -> bool:
    """Whether ``instant`` is a slot of the task's schedule."""
    assert task.schedule is not None
    return task.schedule.next_after(instant - timedelta(microseconds=1)) == instant
