"""Template use cases: admins and operators define task types; users subscribe to them.

Who may do what: templates are read by every role that reads tasks, and written (created,
changed, deleted) by ``admin`` and ``operator`` only. Subscribing creates a task owned by the
subscriber, so it takes a role that writes tasks (``user`` and up; a ``viewer`` may not); an
admin or operator may subscribe other users (``owner``), one by one or in bulk.

A subscription is a task (``template_id`` + ``template_params``), listed, paused, resumed and
deleted with the caller's other tasks. A template change is one transaction: the template's
version is bumped and every subscription is rewritten from it (executor, params filled in with
the subscriber's parameters, policies; a subscription on the template's default schedule
follows the new default) — or, if any subscription's parameters or schedule would not be valid
under the new version, nothing changes and the answer names them.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler_application.accounts.access import (
    Principal,
    can_see,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
    team_scope,
)
from scheduler_application.errors import (
    AlreadyExists,
    ApplicationError,
    Conflict,
    NotFound,
    PermissionDenied,
)
from scheduler_application.events.log import record_event, task_event, task_record
from scheduler_application.limits.references import ensure_limits_exist
from scheduler_application.paging import DEFAULT_PAGE_SIZE, page_limit
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.repositories import Page, TaskFilter
from scheduler_application.ports.unit_of_work import (
    ReadUnitOfWorkFactory,
    UnitOfWork,
    UnitOfWorkFactory,
)
from scheduler_application.tasks.service import (
    ensure_name_free_in_team,
    load_changeable_task,
    writable_team,
)
from scheduler_application.templates.spec import (
    merge_template_patch,
    parse_template_spec,
    template_to_spec,
)
from scheduler_application.templates.subscriptions import (
    DEFAULT,
    apply_template,
    follows_default,
    subscription_spec,
)
from scheduler_domain.accounts import Role
from scheduler_domain.errors import DomainError, ValidationError
from scheduler_domain.events import TASK_CREATED, TASK_UPDATED, EventRecord
from scheduler_domain.executor_policy import ExecutorNotAllowed, ExecutorPolicy
from scheduler_domain.task import Task
from scheduler_domain.template import Template

#: The most subscriptions one bulk request may create.
MAX_BULK = 1_000
_SUBSCRIPTION_KEYS = frozenset({"name", "params", "schedule", "enabled", "owner", "team"})
#: How many invalid subscriptions a refused template change names.
_NAMED = 5


def ensure_manages_templates(principal: Principal) -> None:
    if principal.role not in (Role.ADMIN, Role.OPERATOR):
        raise PermissionDenied(f"role {principal.role.value!r} cannot change templates")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeOutcome:
    """One item of a bulk subscription: ``created`` with the task, or ``refused`` with why."""

    status: str
    task: Task | None = None
    code: str | None = None
    field: str | None = None
    detail: str | None = None


class TemplateService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        executor_policy: ExecutorPolicy | None = None,
        read_uow_factory: ReadUnitOfWorkFactory | None = None,
    ) -> None:
        """``executor_policy`` checks a template's executor against its author's role (a
        subscription runs what its template's author chose) and the python callables."""
        self._uow_factory = uow_factory
        self._reads = read_uow_factory or uow_factory
        self._clock = clock
        self._policy = executor_policy if executor_policy is not None else ExecutorPolicy()

    # -- templates ---------------------------------------------------------------------------

    async def create(self, data: Mapping[str, Any], *, principal: Principal) -> Template:
        ensure_manages_templates(principal)
        spec = parse_template_spec(data)
        self._check_executor(spec.executor, spec.params, principal.role)
        template = spec.template(created_by=principal.subject_id, now=self._clock.now())
        async with self._uow_factory() as uow:
            await ensure_limits_exist(uow, _limits(template), field="policies.limits")
            if await uow.templates.get_by_name(template.name) is not None:
                raise AlreadyExists(
                    f"a template named {template.name!r} already exists", field="name"
                )
            await uow.templates.add(template)
            await _template_event(uow, "template.created", template, actor=principal.actor)
            await uow.commit()
        return template

    async def get(self, template_id: str, *, principal: Principal) -> Template:
        """By id, or by name."""
        ensure_can_read_tasks(principal)
        async with self._reads() as uow:
            return await _load(uow, template_id)

    async def list(
        self, *, principal: Principal, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[Template]:
        ensure_can_read_tasks(principal)
        async with self._reads() as uow:
            return await uow.templates.list(limit=page_limit(limit), cursor=cursor)

    async def update(
        self,
        template_id: str,
        patch: Mapping[str, Any],
        *,
        principal: Principal,
        expected_version: int | None = None,
    ) -> Template:
        """Change the template (PATCH semantics), bump its version and rewrite every
        subscription from it, in one transaction."""
        ensure_manages_templates(principal)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            current = await _load(uow, template_id, for_update=True)
            if expected_version is not None and current.version != expected_version:
                raise Conflict(
                    f"template {current.name} is at version {current.version}, "
                    f"not {expected_version}",
                    field="version",
                )
            spec = parse_template_spec(merge_template_patch(template_to_spec(current), patch))
            self._check_executor(spec.executor, spec.params, principal.role)
            changed = spec.template(created_by=current.created_by, now=current.created_at)
            changed.id = current.id
            changed.updated_at = now
            changed.version = current.version + 1
            await ensure_limits_exist(
                uow, _limits(changed), field="policies.limits", known=_limits(current)
            )
            if changed.name != current.name:
                taken = await uow.templates.get_by_name(changed.name)
                if taken is not None and taken.id != current.id:
                    raise AlreadyExists(
                        f"a template named {changed.name!r} already exists", field="name"
                    )
            rewritten = await self._rewrite_subscriptions(uow, current, changed, principal)
            await uow.templates.update(changed, expected_version=current.version)
            await _template_event(
                uow,
                "template.updated",
                changed,
                actor=principal.actor,
                detail={"subscriptions": rewritten},
            )
            await uow.commit()
        return changed

    async def delete(self, template_id: str, *, principal: Principal) -> None:
        """Refused while tasks are subscribed (delete or unsubscribe them first)."""
        ensure_manages_templates(principal)
        async with self._uow_factory() as uow:
            template = await _load(uow, template_id, for_update=True)
            subscribed = await uow.tasks.count(TaskFilter(template_id=template.id))
            if subscribed:
                raise Conflict(
                    f"template {template.name!r} has {subscribed} subscription(s); delete "
                    "them first",
                    field="subscriptions",
                )
            await uow.templates.delete(template.id)
            await _template_event(uow, "template.deleted", template, actor=principal.actor)
            await uow.commit()

    # -- subscriptions -----------------------------------------------------------------------

    async def subscribe(
        self, template_id: str, data: Mapping[str, Any], *, principal: Principal
    ) -> Task:
        """Create the caller's task from the template (or ``owner``'s, for an admin or
        operator): ``params`` checked against its schema, ``schedule`` within its bounds."""
        ensure_can_write_tasks(principal)
        async with self._uow_factory() as uow:
            # Locked: a template change committing meanwhile would not see this subscription.
            template = await _load(uow, template_id, for_update=True)
            task = await self._subscription(uow, template, data, principal)
            await uow.commit()
        return task

    async def subscribe_many(
        self, template_id: str, items: Sequence[Any], *, principal: Principal
    ) -> builtins.list[SubscribeOutcome]:
        """Subscribe many users at once (admin and operator): every item is answered on its
        own (``created`` or ``refused`` with the field), and a refused item leaves the others
        alone. One transaction for all."""
        ensure_manages_templates(principal)
        if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not items:
            raise ValidationError("subscriptions must be a non-empty list", field="subscriptions")
        if len(items) > MAX_BULK:
            raise ValidationError(
                f"at most {MAX_BULK} subscriptions per request", field="subscriptions"
            )
        answers: builtins.list[SubscribeOutcome] = []
        async with self._uow_factory() as uow:
            template = await _load(uow, template_id, for_update=True)
            for item in items:
                try:
                    task = await self._subscription(uow, template, item, principal)
                except (ApplicationError, DomainError) as error:
                    answers.append(
                        SubscribeOutcome(
                            status="refused",
                            code=error.code,
                            field=error.field,
                            detail=error.message,
                        )
                    )
                else:
                    answers.append(SubscribeOutcome(status="created", task=task))
            await uow.commit()
        return answers

    async def update_subscription(
        self, task_id: str, patch: Mapping[str, Any], *, principal: Principal
    ) -> Task:
        """Change a subscription's ``params`` (merged over its own; null removes one),
        ``schedule`` (null: back to the template's) or ``name``."""
        ensure_can_write_tasks(principal)
        if not isinstance(patch, Mapping):
            raise ValidationError("a patch must be a JSON object", field="body")
        for key in patch:
            if key not in ("params", "schedule", "name"):
                raise ValidationError(
                    f"unknown field {key!r}; a subscription's params, schedule and name "
                    "can be changed",
                    field=str(key),
                )
        now = self._clock.now()
        async with self._uow_factory() as uow:
            # The template's row first, then the task's: the order a template change takes.
            task = await load_changeable_task(uow, task_id, principal)
            if task.template_id is None:
                raise NotFound(f"subscription {task_id} not found", field="task_id")
            template = await _load(uow, task.template_id, for_update=True)
            task = await load_changeable_task(uow, task_id, principal, for_update=True)
            if task.template_id != template.id:
                raise Conflict(f"subscription {task_id} changed meanwhile", field="task_id")
            params = dict(task.template_params or {})
            given = patch.get("params", {})
            if not isinstance(given, Mapping):
                raise ValidationError("params must be an object", field="params")
            for key, value in given.items():
                if value is None:
                    params.pop(key, None)
                else:
                    params[key] = value
            if "schedule" in patch:
                schedule = DEFAULT if patch["schedule"] is None else patch["schedule"]
            else:
                schedule = follows_default(task, template)
            name = patch.get("name", task.name)
            spec = subscription_spec(
                template, name=name, params=params, schedule=schedule, enabled=task.enabled
            )
            before_schedule = task.schedule
            task.name = spec.name
            task.template_params = params
            apply_template(task, template, spec)
            if "name" in patch:
                await _ensure_name_free(uow, task)
            if task.schedule != before_schedule:
                task.reschedule(now)
            await _save(uow, task, now, actor=principal.actor, detail={"changed": sorted(patch)})
            await uow.commit()
        return task

    async def subscriptions(
        self,
        template_id: str,
        *,
        principal: Principal,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Task]:
        """The template's subscriptions the caller may see: those of the caller's teams (all of
        them for admin/operator)."""
        ensure_can_read_tasks(principal)
        async with self._reads() as uow:
            template = await _load(uow, template_id)
            task_filter = TaskFilter(team_ids=team_scope(principal), template_id=template.id)
            return await uow.tasks.list(task_filter, limit=page_limit(limit), cursor=cursor)

    async def count_subscriptions(self, template_id: str, *, principal: Principal) -> int:
        """How many of the template's subscriptions the caller may see (every one for
        admin/operator)."""
        ensure_can_read_tasks(principal)
        async with self._reads() as uow:
            template = await _load(uow, template_id)
            task_filter = TaskFilter(team_ids=team_scope(principal), template_id=template.id)
            return await uow.tasks.count(task_filter)

    # -- internals ---------------------------------------------------------------------------

    async def _subscription(
        self, uow: UnitOfWork, template: Template, data: Any, principal: Principal
    ) -> Task:
        if not isinstance(data, Mapping):
            raise ValidationError("a subscription must be a JSON object", field="body")
        for key in data:
            if key not in _SUBSCRIPTION_KEYS:
                raise ValidationError(
                    f"unknown field {key!r}; expected one of {sorted(_SUBSCRIPTION_KEYS)}",
                    field=str(key),
                )
        owner_id = await self._owner(uow, data.get("owner"), principal)
        team = data.get("team")
        if team is not None and (not isinstance(team, str) or not team):
            raise ValidationError("team must be a team name or id", field="team")
        # A team's subscription: the caller must be its editor or admin (as for any task).
        team_id = owner_id if team is None else await writable_team(uow, team, principal)
        params = data.get("params", {})
        if not isinstance(params, Mapping):
            raise ValidationError("params must be an object", field="params")
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValidationError("enabled must be true or false", field="enabled")
        name = data.get("name", template.name)
        spec = subscription_spec(
            template,
            name=name,
            params=params,
            schedule=data.get("schedule", DEFAULT),
            enabled=enabled,
        )
        self._check_executor(spec.executor, spec.params, Role.ADMIN)
        now = self._clock.now()
        task = Task(
            owner_id=owner_id,
            team_id=team_id,
            created_at=now,
            updated_at=now,
            template_id=template.id,
            template_version=template.version,
            template_params=dict(params),
            **spec.task_fields(),
        )
        task.reschedule(now)
        await _ensure_name_free(uow, task)
        await uow.tasks.add(task)
        await task_event(
            uow,
            TASK_CREATED,
            task,
            at=now,
            actor=principal.actor,
            detail={"template_id": template.id, "template_version": template.version},
        )
        return task

    @staticmethod
    async def _owner(uow: UnitOfWork, owner: Any, principal: Principal) -> str:
        if owner is None:
            return principal.subject_id
        if not isinstance(owner, str) or not owner:
            raise ValidationError("owner must be a username or user id", field="owner")
        if owner != principal.subject_id and principal.role not in (Role.ADMIN, Role.OPERATOR):
            raise PermissionDenied("only admins and operators subscribe other users", field="owner")
        user = await uow.users.get_by_username(owner.lower()) or await uow.users.get(owner)
        if user is None or not can_see(principal, user.id):
            raise NotFound(f"user {owner!r} not found", field="owner")
        if not user.role.can_write_tasks:
            raise ValidationError(
                f"user {user.username!r} ({user.role.value}) cannot own tasks", field="owner"
            )
        return user.id

    async def _rewrite_subscriptions(
        self, uow: UnitOfWork, current: Template, changed: Template, principal: Principal
    ) -> int:
        """Rewrite every subscription from ``changed``; how many there were."""
        now = changed.updated_at
        tasks = await uow.tasks.with_template(current.id)
        rebuilt: builtins.list[tuple[Task, Any]] = []
        problems: builtins.list[str] = []
        for task in tasks:
            try:
                spec = subscription_spec(
                    changed,
                    name=task.name,
                    params=task.template_params or {},
                    schedule=follows_default(task, current),
                    enabled=task.enabled,
                )
            except ValidationError as error:
                problems.append(f"{task.name} ({task.id}): {error.field}: {error.message}")
                continue
            rebuilt.append((task, spec))
        if problems:
            shown = "; ".join(problems[:_NAMED])
            more = f" and {len(problems) - _NAMED} more" if len(problems) > _NAMED else ""
            raise Conflict(
                f"the change would make {len(problems)} subscription(s) invalid: {shown}{more}",
                field="subscriptions",
            )
        # Set-based: the rows in one statement, their events in one (a round trip per
        # subscription made a change of a popular template take ~10 s per 1,000).
        writes: builtins.list[tuple[Task, int]] = []
        records: builtins.list[EventRecord] = []
        detail = {"template_id": changed.id, "template_version": changed.version}
        for task, spec in rebuilt:
            before_schedule = task.schedule
            apply_template(task, changed, spec)
            if task.schedule != before_schedule:
                task.reschedule(now)
            task.touch(now)
            writes.append((task, task.version))
            task.version += 1
            records.append(
                task_record(TASK_UPDATED, task, at=now, actor=principal.actor, detail=detail)
            )
        await uow.tasks.update_many(writes)
        await uow.events.record_many(records)
        return len(rebuilt)

    def _check_executor(self, executor: str, params: Mapping[str, Any], role: Role) -> None:
        self._policy.check_known(executor)
        try:
            self._policy.check(executor, dict(params), role)
        except ExecutorNotAllowed as refused:
            raise PermissionDenied(refused.message, field="executor") from None


async def _load(uow: UnitOfWork, template_id: str, *, for_update: bool = False) -> Template:
    template = await uow.templates.get(template_id, for_update=for_update)
    if template is None:
        template = await uow.templates.get_by_name(template_id)
        if template is not None and for_update:
            template = await uow.templates.get(template.id, for_update=True)
    if template is None:
        raise NotFound(f"template {template_id} not found", field="template_id")
    return template


def _limits(template: Template) -> builtins.list[str]:
    """The named limits the template's policies give its subscriptions."""
    return list(template.policies.get("limits") or [])


async def _ensure_name_free(uow: UnitOfWork, task: Task) -> None:
    await ensure_name_free_in_team(uow, task)


async def _save(
    uow: UnitOfWork, task: Task, now: datetime, *, actor: str, detail: dict[str, Any]
) -> None:
    task.touch(now)
    read_version = task.version
    task.version += 1
    await uow.tasks.update(task, expected_version=read_version)
    await task_event(uow, TASK_UPDATED, task, at=now, actor=actor, detail=detail)


async def _template_event(
    uow: UnitOfWork,
    kind: str,
    template: Template,
    *,
    actor: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """A template change in the event log (no owner: admins and operators see it, as queue
    changes)."""
    await record_event(
        uow,
        kind,
        at=template.updated_at,
        actor=actor,
        subject=f"template:{template.name}",
        detail={"template_id": template.id, "version": template.version, **(detail or {})},
    )
