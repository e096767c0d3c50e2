"""What a subscription is made of: a template's current version filled in with a subscriber's
parameters and schedule — and what a run is given when it is triggered with parameters.

The effective task is *materialised*: the subscription's task row holds the executor, the
rendered params and the policies of the template version it names, so the dispatcher and the
workers treat it as any other task. A template change rewrites all its subscriptions in the
change's transaction (:class:`~scheduler_application.templates.TemplateService`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_application.tasks.spec import TaskSpec, parse_task_spec
from scheduler_application.templates.param_schema import validate_params
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import validate_executor
from scheduler_domain.run import TaskRun
from scheduler_domain.schedules import Schedule, parse_schedule, schedule_to_spec
from scheduler_domain.task import Task
from scheduler_domain.template import Template, placeholders, render

#: A subscription's schedule when its subscriber chose none: the template's.
DEFAULT = object()


def subscription_spec(
    template: Template,
    *,
    name: str,
    params: Mapping[str, Any],
    schedule: Any = DEFAULT,
    enabled: bool = True,
) -> TaskSpec:
    """The task spec of a subscription to ``template``: ``params`` validated against its
    schema (ValidationError naming ``params.<name>``), ``schedule`` (a JSON schedule, None for
    none, or :data:`DEFAULT`) checked against its bounds (naming ``schedule``)."""
    values = validate_params(template.params_schema, params)
    chosen = _schedule(template, schedule)
    data = template.task_spec(name=name, values=values, schedule=schedule_to_spec(chosen))
    data["enabled"] = enabled
    try:
        return parse_task_spec(data)
    except ValidationError as error:
        raise _blame(template, error) from None


def _schedule(template: Template, schedule: Any) -> Schedule | None:
    if schedule is DEFAULT:
        return template.schedule
    if not template.bounds.allow_custom:
        if parse_schedule(schedule) == template.schedule:
            return template.schedule
        raise ValidationError(
            f"template {template.name!r} does not let subscribers choose their schedule",
            field="schedule",
        )
    chosen = parse_schedule(schedule)
    template.bounds.check(chosen)
    return chosen


def _blame(template: Template, error: ValidationError) -> ValidationError:
    """An executor error in the filled-in params, put on the subscriber's parameter when the
    executor param is exactly one placeholder (``"url": "{{url}}"``), else on the template."""
    if error.field and error.field.startswith("params."):
        key = error.field.split(".")[1]
        used = placeholders(template.params.get(key))
        if len(used) == 1:
            return ValidationError(error.message, field=f"params.{used.pop()}")
        return ValidationError(
            f"the template's params, filled in, are not valid: {error.message}",
            field=f"template.{error.field}",
        )
    return error


#: What a subscription keeps of its own when its template is applied to it again: the
#: subscriber's (as ``SUBSCRIPTION_TASK_FIELDS``; the schedule is chosen by ``spec``).
_OWN_FIELDS = frozenset({"name", "enabled", "depends_on", "trigger_rule"})


def apply_template(task: Task, template: Template, spec: TaskSpec) -> None:
    """Give ``task`` what ``spec`` (from :func:`subscription_spec`) decides: everything but its
    id, owner, name, times, version and the subscriber's own fields (enabled, its upstreams
    and trigger rule)."""
    for name, value in spec.task_fields().items():
        if name in _OWN_FIELDS:
            continue
        setattr(task, name, value)
    task.template_id = template.id
    task.template_version = template.version
    task.validate()


def follows_default(task: Task, template: Template) -> Any:
    """The schedule a subscription keeps when its template changes: :data:`DEFAULT` when it is
    on the template's (it follows the template), else its own."""
    return DEFAULT if task.schedule == template.schedule else schedule_to_spec(task.schedule)


@dataclass(frozen=True, slots=True)
class RunParams:
    """What a run triggered with parameters is given: the executor ``params`` it executes
    with, the ``run_params`` as given (merged), and the template version they were rendered
    from (None for a task without a template)."""

    params: dict[str, Any] | None = None
    run_params: dict[str, Any] | None = None
    template_version: int | None = None

    def apply(self, run: TaskRun) -> TaskRun:
        if self.params is not None:
            run.params, run.run_params = self.params, self.run_params
        if self.template_version is not None:
            run.template_version = self.template_version
        return run


async def run_params(uow: UnitOfWork, task: Task, given: Mapping[str, Any] | None) -> RunParams:
    """What a run of ``task`` triggered with ``given`` parameters gets: merged over the task's
    and validated — against the template's schema for a subscription, else by the executor's
    own check — ValidationError naming ``params.<name>``. Nothing when nothing was given (the
    run takes the task's). The template is read in this transaction, so the version recorded
    is the one rendered even if the template changed since the task was read."""
    if given is None:
        return RunParams()
    if not isinstance(given, Mapping) or not all(isinstance(k, str) for k in given):
        raise ValidationError("params must be an object", field="params")
    if task.template_id is None:
        merged = {**task.params, **given}
        validate_executor(task.executor, merged)
        return RunParams(merged, dict(given))
    template = await uow.templates.get(task.template_id)
    if template is None:
        raise ValidationError("the task's template no longer exists", field="template_id")
    chosen = {**(task.template_params or {}), **given}
    values = validate_params(template.params_schema, chosen)
    rendered = render(template.params, values)
    try:
        validate_executor(task.executor, rendered)
    except ValidationError as error:
        raise _blame(template, error) from None
    return RunParams(rendered, chosen, template.version)
