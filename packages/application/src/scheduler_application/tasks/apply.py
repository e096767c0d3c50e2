"""Tasks as code: make the caller's tasks exactly what a file says (``apply``), and write them
out in the same form (``export``).

A tasks file is ``{"tasks": [spec, ...]}``, each spec the JSON shape of a task (see
:mod:`scheduler_application.tasks.spec`), ``depends_on`` naming tasks of the same file or other
tasks of the caller by name (or id). Tasks are matched by name among the caller's own tasks:

- a name the caller has no task of is **created**;
- a task whose canonical form differs is **updated** to the file's form — every field, the ones
  the file leaves out back to their defaults — and one that already matches is **unchanged**;
- with ``prune``, the caller's tasks the file does not name are **deleted**, only those within
  the scope given (a name prefix, a label, or else all of the caller's tasks).

``secret_env`` has no place in a file (values are write-only and never exported, so a file
holding them could never read as unchanged): it is refused, naming the field, and the tasks'
secrets are left as they are. ``export`` then ``apply`` is a no-op.

A file may also hold ``templates:``, a list of template specs
(:mod:`scheduler_application.templates.spec`), matched by name among all templates: created,
updated (every subscription follows, see :class:`TemplateService`) or unchanged; never pruned.
Only admins and operators may apply a file with templates. Templates are applied before tasks.

A file may hold ``limits:``, a list of named shared limits (``parse_limit``'s form with a
``name``), matched by name among all limits: created, updated or unchanged, before templates
and tasks; with ``prune`` and a ``limits`` section, the limits it does not name are deleted
last. Only operators and admins may apply a file with limits. Every limit a task or template
of the file names must exist or be defined by the file (and not pruned by it).

A file may hold ``subscriptions:`` (:mod:`scheduler_application.templates.subscription_file`):
tasks made from a template, by template, parameters and schedule, matched by name among the
caller's tasks like ``tasks`` and created, updated or pruned through :class:`TemplateService`.
``export`` writes subscriptions there, so that a file applied again recreates subscriptions.

``team`` (per task, or once for the whole file at its top level) puts a task in a team where
the caller is an editor or admin (by name or id); a task whose team differs is moved there.
Left out, a new task goes to the caller's personal team and an existing one stays where it is.
``export`` writes the team of the tasks that are not in the caller's personal team.

The whole file is checked before anything changes — every spec parsed (errors name
``tasks[3].schedule.cron``), names unique, dependencies resolvable, no cycle, every executor
allowed — and a dry run answers the same plan without applying it. The changes themselves are
made one task at a time through :class:`TaskService` (the same rules and events as the API's
single calls), upstreams before dependents, dependents deleted before their upstreams; a
failure midway (a concurrent edit) leaves the changes before it made, and the answer says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from scheduler_application.accounts.access import (
    Principal,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
)
from scheduler_application.errors import AlreadyExists, Conflict, NotFound, PermissionDenied
from scheduler_application.limits.service import LimitService, limit_to_spec, parse_limit
from scheduler_application.operations.queue_control import ensure_steers_queues
from scheduler_application.ports.repositories import TaskFilter
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_application.tasks.service import TaskService, writable_team
from scheduler_application.tasks.spec import parse_task_spec, task_to_spec
from scheduler_application.templates.service import TemplateService, ensure_manages_templates
from scheduler_application.templates.spec import parse_template_spec, template_to_spec
from scheduler_application.templates.subscription_file import (
    TEMPLATE_DEFAULT,
    canonical_subscription,
    parse_subscription_items,
    subscription_to_file,
)
from scheduler_application.templates.subscriptions import DEFAULT, subscription_spec
from scheduler_domain.errors import ValidationError
from scheduler_domain.shared_limits import SharedLimit
from scheduler_domain.task import Task
from scheduler_domain.template import Template

#: Most tasks one file may hold.
MAX_TASKS_PER_FILE = 5_000
_PAGE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: What a plan may do to a task.
ACTIONS = ("create", "update", "delete", "unchanged")


@dataclass(frozen=True, slots=True)
class TaskChange:
    """One task's (or, by ``kind``, subscription's, template's or limit's) part of the plan:
    ``action`` is create, update, delete or unchanged; ``fields`` maps each changed field
    (dotted for ``retry.*``/``misfire.*``) to its old and new value (old is None for a create,
    new None for a delete). ``task_id`` is the template's id for a template, None for a
    limit."""

    name: str
    action: str
    task_id: str | None = None
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    kind: str = "task"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    changes: list[TaskChange]
    dry_run: bool

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.action == action)


@dataclass(frozen=True, slots=True)
class PruneScope:
    """Which of the caller's tasks ``prune`` may delete: all of them, or those whose name
    starts with ``name_prefix`` and/or that carry ``label``."""

    name_prefix: str | None = None
    label: str | None = None

    def covers(self, task: Task) -> bool:
        if self.name_prefix is not None and not task.name.startswith(self.name_prefix):
            return False
        return self.label is None or self.label in task.labels


class TaskApplyService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        tasks: TaskService,
        templates: TemplateService | None = None,
        limits: LimitService | None = None,
    ) -> None:
        """Without ``templates`` (``limits``) a file with a ``templates`` (``limits``) section
        is refused."""
        self._uow_factory = uow_factory
        self._tasks = tasks
        self._templates = templates
        self._limits = limits

    async def export(
        self, *, principal: Principal, scope: PruneScope | None = None
    ) -> list[dict[str, Any]]:
        """The caller's plain tasks as file specs (:meth:`export_file`'s ``tasks``)."""
        return list((await self.export_file(principal=principal, scope=scope))["tasks"])

    async def export_file(
        self, *, principal: Principal, scope: PruneScope | None = None
    ) -> dict[str, Any]:
        """The caller's tasks (within ``scope``) as a tasks file: plain tasks under ``tasks``,
        tasks made from a template under ``subscriptions`` (template, parameters, schedule:
        applying the file again makes them subscriptions again); by name, ``depends_on`` by
        name for the caller's own upstreams (by id for another owner's)."""
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            owned = await _owned(uow, principal.subject_id)
            names = await _names(uow, owned, principal.subject_id)
            chosen = sorted(
                (t for t in owned if scope is None or scope.covers(t)), key=lambda t: t.name
            )
            teams = await _team_names(uow, chosen)
            templates = await _templates_of(uow, chosen)
        plain = [_file_spec(t, names, teams) for t in chosen if t.template_id is None]
        subscriptions = []
        for task in chosen:
            template = templates.get(task.template_id or "")
            if template is None:
                continue
            item = subscription_to_file(task, template, names)
            if task.team_id != task.owner_id:
                item["team"] = teams.get(task.team_id, task.team_id)
            subscriptions.append(item)
        document: dict[str, Any] = {"version": 1, "tasks": plain}
        if subscriptions:
            document["subscriptions"] = subscriptions
        return document

    async def apply(
        self,
        document: Any,
        *,
        principal: Principal,
        prune: bool = False,
        scope: PruneScope | None = None,
        dry_run: bool = False,
    ) -> ApplyResult:
        ensure_can_write_tasks(principal)
        limits = _limit_specs(document)
        has_limits = isinstance(document, Mapping) and "limits" in document
        if has_limits:
            ensure_steers_queues(principal)
            if self._limits is None:
                raise ValidationError("limits cannot be applied here", field="limits")
        templates = _template_specs(document)
        if templates:
            ensure_manages_templates(principal)
            if self._templates is None:
                raise ValidationError("templates cannot be applied here", field="templates")
        specs = _specs(document)
        subscriptions = parse_subscription_items(document, max_items=MAX_TASKS_PER_FILE)
        if subscriptions and self._templates is None:
            raise ValidationError("subscriptions cannot be applied here", field="subscriptions")
        _names_once(specs, subscriptions)
        for index, spec in enumerate(specs):  # every executor allowed, before any change
            parsed = parse_task_spec(spec)
            try:
                self._tasks.check_executor(parsed.executor, parsed.params, principal)
            except (ValidationError, PermissionDenied) as error:
                raise type(error)(
                    error.message, field=_at(f"tasks[{index}]", error.field)
                ) from None
        async with self._uow_factory() as uow:
            owned = await _owned(uow, principal.subject_id)
            names = await _names(uow, owned, principal.subject_id)
            team_ids = await _team_ids(uow, specs, principal)
            stored = {limit.name: limit for limit in await uow.limits.list()}
        by_name = {t.name: t for t in owned}
        limit_plan = _limit_plan(limits, stored, pruned=prune and has_limits, scope=scope)
        doomed_limits = {c.name for c in limit_plan if c.action == "delete"}
        _check_limit_references(
            specs,
            templates,
            by_name,
            known=({*stored} - doomed_limits) | {x.name for x in limits},
            doomed=doomed_limits,
        )
        subscribed = await self._subscription_templates(subscriptions, templates, principal)
        sub_at = {item["name"]: f"subscriptions[{i}]" for i, item in enumerate(subscriptions)}
        order = _upstreams_first([*specs, *subscriptions])
        changes = [c for c in limit_plan if c.action != "delete"]
        changes += await self._template_plan(templates, principal)
        task_at = {spec["name"]: f"tasks[{i}]" for i, spec in enumerate(specs)}
        named_alike: dict[str, list[Task]] = {}
        for task in owned:
            named_alike.setdefault(task.name, []).append(task)
        for spec in order:
            name = spec["name"]
            team = team_ids.get(spec["team"]) if "team" in spec else None
            current = _match(
                named_alike.get(name, []), name, team, task_at.get(name) or sub_at[name]
            )
            if name in subscribed:
                changes.append(
                    await self._subscription_plan(
                        spec, subscribed[name], current, names, principal, sub_at[name]
                    )
                )
                continue
            wanted = _canonical(spec)
            if current is None:
                created = {k: (None, v) for k, v in _flat(wanted)}
                if team is not None:
                    created["team"] = (None, team)
                changes.append(TaskChange(name, "create", fields=created))
                continue
            have = _file_spec(current, names)
            diff = {
                key: (old, new)
                for (key, old), (_, new) in zip(_flat(have), _flat(wanted), strict=True)
                if old != new
            }
            if team is not None and team != current.team_id:
                diff["team"] = (current.team_id, team)
            changes.append(TaskChange(name, "update" if diff else "unchanged", current.id, diff))
        if prune:
            named = {spec["name"] for spec in [*specs, *subscriptions]}
            doomed = [t for t in owned if t.name not in named and (scope or PruneScope()).covers(t)]
            for task in _dependents_first(doomed):
                changes.append(TaskChange(task.name, "delete", task.id))
        changes += [c for c in limit_plan if c.action == "delete"]  # after what named them
        if dry_run:
            return ApplyResult(changes, dry_run=True)
        by_limit = {limit.name: limit for limit in limits}
        return ApplyResult(
            await self._carry_out(changes, [*specs, *subscriptions], principal, by_limit),
            dry_run=False,
        )

    async def _subscription_templates(
        self,
        items: list[dict[str, Any]],
        file_templates: list[dict[str, Any]],
        principal: Principal,
    ) -> dict[str, Template]:
        """Each subscription's template by the subscription's name — a stored one, or one
        the file itself defines — with its parameters and schedule checked against it
        (errors name ``subscriptions[i].params.city``), before anything changes."""
        if not items:
            return {}
        assert self._templates is not None
        in_file = {spec["name"]: spec for spec in file_templates}
        found: dict[str, Template] = {}
        for index, item in enumerate(items):
            where = f"subscriptions[{index}]"
            ref = item["template"]
            template: Template | None = None
            if ref in in_file:
                template = parse_template_spec(in_file[ref]).template(created_by="-", now=_EPOCH)
            else:
                try:
                    template = await self._templates.get(ref, principal=principal)
                except NotFound:
                    raise ValidationError(
                        f"no template named {ref!r}", field=f"{where}.template"
                    ) from None
            try:
                subscription_spec(
                    template,
                    name=item["name"],
                    params=item.get("params") or {},
                    schedule=item.get("schedule", DEFAULT),
                    enabled=item.get("enabled", True),
                )
            except ValidationError as error:
                raise ValidationError(error.message, field=_at(where, error.field)) from None
            found[item["name"]] = template
        return found

    async def _subscription_plan(
        self,
        item: dict[str, Any],
        template: Template,
        current: Task | None,
        names: Mapping[str, str],
        principal: Principal,
        where: str,
    ) -> TaskChange:
        name = item["name"]
        wanted = canonical_subscription(item, template)
        if current is None:
            fields = {k: (None, v) for k, v in sorted(wanted.items())}
            if item.get("team") is not None:
                fields["team"] = (None, item["team"])
            return TaskChange(name, "create", fields=fields, kind="subscription")
        if current.template_id is None:
            raise ValidationError(
                f"{name!r} is a task of yours that is not a subscription: delete or rename it "
                "to subscribe under that name",
                field=f"{where}.name",
            )
        assert self._templates is not None
        stored = await self._templates.get(current.template_id, principal=principal)
        if stored.name != template.name:
            raise ValidationError(
                f"{name!r} is a subscription to template {stored.name!r}, not "
                f"{template.name!r}: delete it first to subscribe it to another",
                field=f"{where}.template",
            )
        have = canonical_subscription(subscription_to_file(current, stored, names), stored)
        diff = {k: (have[k], v) for k, v in sorted(wanted.items()) if have[k] != v}
        action = "update" if diff else "unchanged"
        return TaskChange(name, action, current.id, diff, kind="subscription")

    async def _carry_out_subscription(
        self, change: TaskChange, item: Mapping[str, Any], principal: Principal
    ) -> str | None:
        """Create or update one subscription; its task's id."""
        assert self._templates is not None
        own: dict[str, Any] = {}
        for key in ("depends_on", "trigger_rule"):
            if key in change.fields:
                own[key] = change.fields[key][1]
        if change.action == "create":
            data = {
                key: item[key]
                for key in ("name", "params", "schedule", "enabled", "team")
                if key in item
            }
            task = await self._templates.subscribe(item["template"], data, principal=principal)
            if own.get("depends_on") or own.get("trigger_rule", "all_success") != "all_success":
                await self._tasks.update(task.id, own, principal=principal)
            return task.id
        if change.action != "update" or change.task_id is None:
            return change.task_id
        patch: dict[str, Any] = {}
        if "params" in change.fields:
            old, new = change.fields["params"]  # the file is the whole truth
            patch["params"] = {**dict.fromkeys(k for k in old if k not in new), **new}
        if "schedule" in change.fields:
            chosen = change.fields["schedule"][1]
            if chosen == TEMPLATE_DEFAULT:
                patch["schedule"] = None  # back on the template's, following it
            else:
                own["schedule"] = chosen  # null here is none: on demand
        if patch:
            await self._templates.update_subscription(change.task_id, patch, principal=principal)
        if "enabled" in change.fields:
            own["enabled"] = change.fields["enabled"][1]
        if own:
            await self._tasks.update(change.task_id, own, principal=principal)
        return change.task_id

    async def _carry_out(
        self,
        plan: list[TaskChange],
        specs: list[dict[str, Any]],
        principal: Principal,
        limits: Mapping[str, SharedLimit],
    ) -> list[TaskChange]:
        by_name = {spec["name"]: spec for spec in specs}
        done: list[TaskChange] = []
        for change in plan:
            if change.kind == "template":
                done.append(await self._carry_out_template(change, done, principal))
                continue
            if change.kind == "limit":
                await self._carry_out_limit(change, limits.get(change.name), done, principal)
                done.append(change)
                continue
            if change.kind == "subscription" and change.action != "delete":
                try:
                    task_id = await self._carry_out_subscription(
                        change, by_name[change.name], principal
                    )
                except (
                    AlreadyExists,
                    Conflict,
                    NotFound,
                    PermissionDenied,
                    ValidationError,
                ) as error:
                    applied = ", ".join(
                        f"{c.action} {c.name}" for c in done if c.action != "unchanged"
                    )
                    raise type(error)(
                        f"{change.action} of subscription {change.name!r} failed: "
                        f"{error.message} (applied before it: {applied or 'nothing'})",
                        field=f"subscriptions.{change.name}",
                    ) from error
                done.append(replace(change, task_id=task_id))
                continue
            try:
                if change.action == "create":
                    task = await self._tasks.create(by_name[change.name], principal=principal)
                    done.append(TaskChange(change.name, "create", task.id, change.fields))
                    continue
                if change.action == "update" and change.task_id is not None:
                    await self._tasks.update(
                        change.task_id, _full_patch(by_name[change.name]), principal=principal
                    )
                elif change.action == "delete" and change.task_id is not None:
                    await self._tasks.delete(change.task_id, principal=principal)
            except (AlreadyExists, Conflict, NotFound, PermissionDenied, ValidationError) as error:
                applied = ", ".join(f"{c.action} {c.name}" for c in done if c.action != "unchanged")
                raise type(error)(
                    f"{change.action} of task {change.name!r} failed: {error.message}"
                    f" (applied before it: {applied or 'nothing'})",
                    field=f"tasks.{change.name}",
                ) from error
            done.append(change)
        return done

    async def _template_plan(
        self, templates: list[dict[str, Any]], principal: Principal
    ) -> list[TaskChange]:
        if not templates or self._templates is None:
            return []
        changes: list[TaskChange] = []
        for spec in templates:
            wanted = template_to_spec(
                parse_template_spec(spec).template(created_by="-", now=_EPOCH)
            )
            try:
                current = await self._templates.get(spec["name"], principal=principal)
            except NotFound:
                fields = {k: (None, v) for k, v in sorted(wanted.items())}
                changes.append(TaskChange(spec["name"], "create", None, fields, kind="template"))
                continue
            have = template_to_spec(current)
            diff = {k: (have[k], v) for k, v in sorted(wanted.items()) if have[k] != v}
            action = "update" if diff else "unchanged"
            changes.append(TaskChange(spec["name"], action, current.id, diff, kind="template"))
        return changes

    async def _carry_out_template(
        self, change: TaskChange, done: list[TaskChange], principal: Principal
    ) -> TaskChange:
        assert self._templates is not None
        wanted = {key: new for key, (_, new) in change.fields.items()}
        if "policies" in change.fields and change.action == "update":
            old, new = change.fields["policies"]  # the file is the whole truth: drop the rest
            wanted["policies"] = {**dict.fromkeys(k for k in old if k not in new), **new}
        try:
            if change.action == "create":
                created = await self._templates.create(
                    {**wanted, "name": change.name}, principal=principal
                )
                return TaskChange(change.name, "create", created.id, change.fields, "template")
            if change.action == "update" and change.task_id is not None:
                await self._templates.update(change.task_id, wanted, principal=principal)
        except (AlreadyExists, Conflict, NotFound, PermissionDenied, ValidationError) as error:
            applied = ", ".join(f"{c.action} {c.name}" for c in done if c.action != "unchanged")
            raise type(error)(
                f"{change.action} of template {change.name!r} failed: {error.message}"
                f" (applied before it: {applied or 'nothing'})",
                field=f"templates.{change.name}",
            ) from error
        return change

    async def _carry_out_limit(
        self,
        change: TaskChange,
        limit: SharedLimit | None,
        done: list[TaskChange],
        principal: Principal,
    ) -> None:
        assert self._limits is not None
        try:
            if change.action in ("create", "update") and limit is not None:
                await self._limits.put(limit, principal=principal)
            elif change.action == "delete":
                await self._limits.delete(change.name, principal=principal)
        except (Conflict, NotFound, PermissionDenied, ValidationError) as error:
            applied = ", ".join(f"{c.action} {c.name}" for c in done if c.action != "unchanged")
            raise type(error)(
                f"{change.action} of limit {change.name!r} failed: {error.message}"
                f" (applied before it: {applied or 'nothing'})",
                field=f"limits.{change.name}",
            ) from error


def _match(found: Sequence[Task], name: str, team_id: str | None, where: str) -> Task | None:
    """The caller's task a file item names, among ``found`` (the caller's tasks of that name).
    Names are unique within a team, so the caller may have tasks of one name in several teams:
    then the item's ``team`` decides (none of them in that team: a new task there), and an
    item without one is refused."""
    if len(found) <= 1:
        return found[0] if found else None
    if team_id is None:
        raise ValidationError(
            f"you have {len(found)} tasks named {name!r} (in different teams): give the "
            "item's team",
            field=f"{where}.team",
        )
    return next((t for t in found if t.team_id == team_id), None)


def _names_once(specs: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]]) -> None:
    """A name is a task or a subscription of the file, not both."""
    tasks = {spec["name"]: index for index, spec in enumerate(specs)}
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"subscriptions[{index}]"
        name = item["name"]
        if name in tasks:
            raise ValidationError(
                f"{name!r} is named twice (tasks[{tasks[name]}] and {where})",
                field=f"{where}.name",
            )
        if name in seen:
            raise ValidationError(
                f"{name!r} is named twice (subscriptions[{seen[name]}] and {where})",
                field=f"{where}.name",
            )
        seen[name] = index


async def _templates_of(uow: UnitOfWork, tasks: Sequence[Task]) -> dict[str, Template]:
    found: dict[str, Template] = {}
    for template_id in sorted({t.template_id for t in tasks if t.template_id is not None}):
        template = await uow.templates.get(template_id)
        if template is not None:
            found[template_id] = template
    return found


def _limit_specs(document: Any) -> list[SharedLimit]:
    """The file's named limits (``limits: [{name: vendor-api, rate: 100/s}, ...]``), each
    checked and named once; errors name the item (``limits[0].rate``)."""
    if not isinstance(document, Mapping) or "limits" not in document:
        return []
    items = document["limits"]
    if not isinstance(items, list):
        raise ValidationError("limits must be a list", field="limits")
    if len(items) > MAX_TASKS_PER_FILE:
        raise ValidationError(f"at most {MAX_TASKS_PER_FILE} limits per file", field="limits")
    seen: dict[str, int] = {}
    limits: list[SharedLimit] = []
    for index, item in enumerate(items):
        where = f"limits[{index}]"
        if not isinstance(item, Mapping):
            raise ValidationError(f"{where} must be an object", field=where)
        try:
            limit = parse_limit(item.get("name"), item)  # type: ignore[arg-type]
        except ValidationError as error:
            raise ValidationError(error.message, field=_at(where, error.field)) from None
        if limit.name in seen:
            raise ValidationError(
                f"limit {limit.name!r} is named twice (limits[{seen[limit.name]}] and {where})",
                field=f"{where}.name",
            )
        seen[limit.name] = index
        limits.append(limit)
    return limits


def _limit_plan(
    limits: Sequence[SharedLimit],
    stored: Mapping[str, SharedLimit],
    *,
    pruned: bool,
    scope: PruneScope | None,
) -> list[TaskChange]:
    """Each limit of the file created, updated or unchanged; with ``prune`` (and a ``limits``
    section in the file) the stored limits it does not name deleted, within ``scope``'s name
    prefix (a label scope prunes no limit: limits carry no labels)."""
    changes: list[TaskChange] = []
    for limit in limits:
        wanted = limit_to_spec(limit)
        current = stored.get(limit.name)
        if current is None:
            fields = {k: (None, v) for k, v in sorted(wanted.items())}
            changes.append(TaskChange(limit.name, "create", None, fields, kind="limit"))
            continue
        have = limit_to_spec(current)
        diff = {k: (have[k], v) for k, v in sorted(wanted.items()) if have[k] != v}
        action = "update" if diff else "unchanged"
        changes.append(TaskChange(limit.name, action, None, diff, kind="limit"))
    scope = scope or PruneScope()
    if pruned and scope.label is None:
        named = {limit.name for limit in limits}
        for name in sorted(stored):
            if name not in named and (
                scope.name_prefix is None or name.startswith(scope.name_prefix)
            ):
                changes.append(TaskChange(name, "delete", None, kind="limit"))
    return changes


def _check_limit_references(
    specs: Sequence[Mapping[str, Any]],
    templates: Sequence[Mapping[str, Any]],
    tasks: Mapping[str, Task],
    *,
    known: set[str],
    doomed: set[str],
) -> None:
    """Every limit the file's tasks and templates name exists, or the file defines it, and
    the file does not prune it; a task keeps the other names it holds already. Refused naming
    the item
    (``tasks[2].limits[0]``), before anything changes."""
    for index, spec in enumerate(templates):
        policies = spec.get("policies") or {}
        for at, name in enumerate(policies.get("limits") or []):
            if name not in known:
                raise ValidationError(
                    f"no limit named {name!r}", field=f"templates[{index}].policies.limits[{at}]"
                )
    for index, spec in enumerate(specs):
        current = tasks.get(spec["name"])
        held = set(current.limits) - doomed if current is not None else set()
        for at, name in enumerate(spec.get("limits") or []):
            if name not in known and name not in held:
                raise ValidationError(
                    f"no limit named {name!r}", field=f"tasks[{index}].limits[{at}]"
                )


def _template_specs(document: Any) -> list[dict[str, Any]]:
    """The file's template specs, each checked and named uniquely (``templates[1].params``)."""
    if not isinstance(document, Mapping) or "templates" not in document:
        return []
    items = document["templates"]
    if not isinstance(items, list):
        raise ValidationError("templates must be a list", field="templates")
    if len(items) > MAX_TASKS_PER_FILE:
        raise ValidationError(f"at most {MAX_TASKS_PER_FILE} templates per file", field="templates")
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"templates[{index}]"
        try:
            parse_template_spec(item)
        except ValidationError as error:
            raise ValidationError(error.message, field=_at(where, error.field)) from None
        name = item["name"]
        if name in seen:
            raise ValidationError(
                f"template {name!r} is named twice (templates[{seen[name]}] and {where})",
                field=f"{where}.name",
            )
        seen[name] = index
    return [dict(item) for item in items]


def _specs(document: Any) -> list[dict[str, Any]]:
    """The file's task specs, each checked, named uniquely, without ``secret_env``."""
    if not isinstance(document, Mapping):
        raise ValidationError('a tasks file is an object with a "tasks" list', field="tasks")
    if not {"templates", "limits", "subscriptions"}.isdisjoint(document) and (
        "tasks" not in document
    ):
        document = {**document, "tasks": []}
    if not isinstance(document.get("tasks"), list):
        raise ValidationError('a tasks file is an object with a "tasks" list', field="tasks")
    unknown = sorted(
        set(document) - {"tasks", "version", "templates", "limits", "subscriptions", "team"}
    )
    if unknown:
        raise ValidationError(f"unknown key {unknown[0]!r} in the tasks file", field=unknown[0])
    if document.get("version", 1) != 1:
        raise ValidationError("version must be 1", field="version")
    items = document["tasks"]
    if len(items) > MAX_TASKS_PER_FILE:
        raise ValidationError(f"at most {MAX_TASKS_PER_FILE} tasks per file", field="tasks")
    seen: dict[str, int] = {}
    specs: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where = f"tasks[{index}]"
        if not isinstance(item, Mapping):
            raise ValidationError(f"{where} must be an object", field=where)
        if "secret_env" in item:
            raise ValidationError(
                "secret_env cannot be applied from a file (values are write-only); set secrets "
                "with a task update, apply leaves them as they are",
                field=f"{where}.secret_env",
            )
        try:
            parse_task_spec(item)
        except ValidationError as error:
            raise ValidationError(error.message, field=_at(where, error.field)) from None
        name = item["name"]
        if name in seen:
            raise ValidationError(
                f"task {name!r} is named twice (tasks[{seen[name]}] and {where})",
                field=f"{where}.name",
            )
        seen[name] = index
        spec = dict(item)
        if "team" not in spec and document.get("team") is not None:
            spec["team"] = document["team"]
        try:
            parse_task_spec(spec)
        except ValidationError as error:
            raise ValidationError(error.message, field="team") from None
        specs.append(spec)
    return specs


def _at(where: str, field: str | None) -> str:
    return where if field in (None, "body") else f"{where}.{field}"


def _canonical(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A file spec in the form ``export`` writes: every field, defaults filled in."""
    parsed = parse_task_spec(spec)
    probe = Task(
        owner_id="-",
        created_at=_EPOCH,
        updated_at=_EPOCH,
        **{**parsed.task_fields(), "depends_on": ()},
    )
    canonical = task_to_spec(probe)
    canonical["depends_on"] = sorted(parsed.depends_on)
    return canonical


def _file_spec(
    task: Task, names: Mapping[str, str], teams: Mapping[str, str] | None = None
) -> dict[str, Any]:
    spec = task_to_spec(task)
    spec["depends_on"] = sorted(names.get(upstream, upstream) for upstream in task.depends_on)
    if teams is not None and task.team_id != task.owner_id:
        spec["team"] = teams.get(task.team_id, task.team_id)
    return spec


def _full_patch(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH that sets every field to the file's value (left out: the default; the team
    left out: where the task is)."""
    patch = _canonical(spec)
    patch["depends_on"] = list(spec.get("depends_on") or [])
    if "team" in spec:
        patch["team"] = spec["team"]
    return patch


async def _team_ids(
    uow: UnitOfWork, specs: Sequence[Mapping[str, Any]], principal: Principal
) -> dict[str, str]:
    """Each team the file names → its id, checked before anything changes: a team the caller
    cannot see, or may not put tasks in, is refused naming the task's ``team``."""
    resolved: dict[str, str] = {}
    for index, spec in enumerate(specs):
        ref = spec.get("team")
        if ref is None or ref in resolved:
            continue
        try:
            resolved[ref] = await writable_team(uow, ref, principal)
        except (NotFound, PermissionDenied) as error:
            raise type(error)(error.message, field=f"tasks[{index}].team") from None
    return resolved


async def _team_names(uow: UnitOfWork, tasks: Sequence[Task]) -> dict[str, str]:
    names: dict[str, str] = {}
    for team_id in {t.team_id for t in tasks if t.team_id != t.owner_id}:
        team = await uow.teams.get(team_id)
        if team is not None:
            names[team_id] = team.name
    return names


def _flat(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key in sorted(spec):
        value = spec[key]
        if key in ("retry", "misfire") and isinstance(value, Mapping):
            out.extend((f"{key}.{inner}", value[inner]) for inner in sorted(value))
        else:
            out.append((key, value))
    return out


def _upstreams_first(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The specs ordered so that each comes after the file's tasks it depends on; a cycle
    within the file is refused (one through existing tasks is caught by the task rules)."""
    by_name = {spec["name"]: spec for spec in specs}
    ordered: list[dict[str, Any]] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ValidationError(f"dependency cycle in the file: {cycle}", field="depends_on")
        state[name] = "visiting"
        for upstream in by_name[name].get("depends_on") or []:
            if upstream in by_name:
                visit(upstream, [*path, name])
        state[name] = "done"
        ordered.append(by_name[name])

    for spec in specs:
        visit(spec["name"], [])
    return ordered


def _dependents_first(tasks: Sequence[Task]) -> list[Task]:
    ids = {t.id for t in tasks}
    ordered: list[Task] = []
    placed: set[str] = set()
    remaining = list(tasks)
    while remaining:
        progress = False
        for task in list(remaining):
            # A task goes once every doomed task depending on it has gone.
            if all(
                other.id in placed
                for other in remaining
                if task.id in other.depends_on and other.id in ids and other is not task
            ):
                ordered.append(task)
                placed.add(task.id)
                remaining.remove(task)
                progress = True
        if not progress:  # a cycle cannot exist among tasks; keep going regardless
            ordered.extend(remaining)
            break
    return ordered


async def _owned(uow: UnitOfWork, owner_id: str) -> list[Task]:
    tasks: list[Task] = []
    cursor: str | None = None
    while True:
        page = await uow.tasks.list(TaskFilter(owner_id=owner_id), limit=_PAGE, cursor=cursor)
        tasks.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return tasks


async def _names(uow: UnitOfWork, owned: list[Task], owner_id: str) -> dict[str, str]:
    """Upstream id → name, for the caller's own upstreams."""
    names = {t.id: t.name for t in owned}
    foreign = {u for t in owned for u in t.depends_on if u not in names}
    for task in await uow.tasks.get_many(sorted(foreign)):
        if task.owner_id == owner_id:
            names[task.id] = task.name
    return names
