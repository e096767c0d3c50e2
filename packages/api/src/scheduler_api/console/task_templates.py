"""The console's templates: the list, one template (its schema, defaults, bounds, version and
how many subscriptions the caller may see), subscribing with parameters (a refused value is
shown on the form, its field named) and the caller's subscriptions to pause, resume or remove;
for admins and operators, creating, changing (a new version) and deleting templates.

Everything goes through :class:`~scheduler_application.templates.TemplateService` and the task
use cases, as ``/api/v1/templates`` and ``/api/v1/tasks`` do: a subscription of a team the
caller is no member of is a 404, a viewer's post is a 403. CSRF and origin were checked by the
router's hook."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from scheduler_api.console.context import (
    Console,
    FormError,
    form_error,
    form_fields,
    form_page,
    page,
    redirect,
)
from scheduler_api.console.template_forms import (
    PARAMS_JSON,
    expected_version,
    param_inputs,
    subscription_body,
    template_body,
    template_form,
)
from scheduler_api.dependencies import Options, Services
from scheduler_api.params import Cursor, object_id, open_cursor, seal_cursor
from scheduler_application.errors import NotFound
from scheduler_application.templates.service import ensure_manages_templates
from scheduler_domain.executor_params import BUILTIN_EXECUTORS
from scheduler_domain.task import Task
from scheduler_domain.template import Template as TaskTemplate

PAGE = 50
#: The caller's subscriptions shown on a template's page.
SUBSCRIPTIONS_SHOWN = 50
TemplateRef = Annotated[str, PathParameter(max_length=200)]
Id = Annotated[str, PathParameter(max_length=64)]


async def _detail(
    request: Request[Any, Any, Any],
    console: Console,
    services: Services,
    template_ref: str,
    *,
    error: FormError | None = None,
    values: dict[str, str] | None = None,
) -> Template:
    principal = console.principal
    template = await services.templates.get(template_ref, principal=principal)
    subscriptions = await services.templates.subscriptions(
        template.id, principal=principal, limit=SUBSCRIPTIONS_SHOWN
    )
    teams = [
        view
        for view in await services.teams.list_mine(principal=principal)
        if view.role is not None and view.role.can_write and not view.team.personal
    ]
    return form_page(
        request,
        console,
        "task_template.html",
        title=template.name,
        tpl=template,
        subscribed=await services.templates.count_subscriptions(template.id, principal=principal),
        subscriptions=subscriptions.items,
        more_subscriptions=subscriptions.next_cursor is not None,
        inputs=param_inputs(template.params_schema),
        params_json=PARAMS_JSON,
        teams=teams,
        error=error,
        values=values or {},
    )


def _form_page(
    request: Request[Any, Any, Any],
    console: Console,
    *,
    template: TaskTemplate | None,
    values: dict[str, str],
    error: FormError | None = None,
) -> Template:
    return form_page(
        request,
        console,
        "template_form.html",
        title=f"Change {template.name}" if template else "New template",
        tpl=template,
        values=values,
        executors=sorted(BUILTIN_EXECUTORS),
        error=error,
    )


async def _subscription(
    services: Services, console: Console, template_ref: str, task_id: str
) -> Task:
    """The caller's subscription ``task_id`` to the template (404 otherwise, as for a task)."""
    template = await services.templates.get(template_ref, principal=console.principal)
    task = await services.tasks.get(
        object_id(task_id, kind="subscription", field="task_id"), principal=console.principal
    )
    if task.template_id != template.id:
        raise NotFound(f"subscription {task_id} not found", field="task_id")
    return task


class TemplatesController(Controller):
    @get("/templates")
    async def templates(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
        cursor: Cursor = None,
    ) -> Template:
        found = await services.templates.list(
            principal=console.principal, limit=PAGE, cursor=open_cursor(cursor, options)
        )
        return page(
            request,
            console,
            "task_templates.html",
            title="Templates",
            templates=found.items,
            next_cursor=seal_cursor(found.next_cursor, options),
        )

    @get("/templates/new")
    async def new(self, request: Request[Any, Any, Any], console: Console) -> Template:
        ensure_manages_templates(console.principal)
        return _form_page(request, console, template=None, values=template_form(None))

    @post("/templates")
    async def create(
        self, request: Request[Any, Any, Any], console: Console, services: Services
    ) -> Template | Redirect:
        ensure_manages_templates(console.principal)
        form = await form_fields(request)
        try:
            created = await services.templates.create(
                template_body(form), principal=console.principal
            )
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return _form_page(request, console, template=None, values=form, error=shown)
        return redirect(request, console, f"/ui/templates/{created.id}")

    @get("/templates/{template_ref:str}")
    async def template(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        template_ref: TemplateRef,
    ) -> Template:
        return await _detail(request, console, services, template_ref)

    @get("/templates/{template_ref:str}/edit")
    async def edit(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        template_ref: TemplateRef,
    ) -> Template:
        ensure_manages_templates(console.principal)
        template = await services.templates.get(template_ref, principal=console.principal)
        return _form_page(request, console, template=template, values=template_form(template))

    @post("/templates/{template_ref:str}/edit")
    async def change(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        template_ref: TemplateRef,
    ) -> Template | Redirect:
        ensure_manages_templates(console.principal)
        current = await services.templates.get(template_ref, principal=console.principal)
        form = await form_fields(request)
        try:
            changed = await services.templates.update(
                current.id,
                template_body(form, current=current),
                principal=console.principal,
                expected_version=expected_version(form),
            )
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return _form_page(request, console, template=current, values=form, error=shown)
        return redirect(request, console, f"/ui/templates/{changed.id}")

    @post("/templates/{template_ref:str}/delete")
    async def delete(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        template_ref: TemplateRef,
    ) -> Redirect:
        await services.templates.delete(template_ref, principal=console.principal)
        return redirect(request, console, "/ui/templates")

    @post("/templates/{template_ref:str}/subscribe")
    async def subscribe(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        template_ref: TemplateRef,
    ) -> Template | Redirect:
        template = await services.templates.get(template_ref, principal=console.principal)
        form = await form_fields(request)
        try:
            await services.templates.subscribe(
                template.id, subscription_body(template, form), principal=console.principal
            )
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return await _detail(request, console, services, template.id, error=shown, values=form)
        return redirect(request, console, f"/ui/templates/{template.id}#subscriptions")

    @post("/templates/{template_ref:str}/subscriptions/{task_id:str}/pause")
    async def pause(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        template_ref: TemplateRef,
        task_id: Id,
    ) -> Redirect:
        task = await _subscription(services, console, template_ref, task_id)
        await services.tasks.pause(task.id, principal=console.principal)
        return redirect(request, console, f"/ui/templates/{task.template_id}#subscriptions")

    @post("/templates/{template_ref:str}/subscriptions/{task_id:str}/resume")
    async def resume(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        template_ref: TemplateRef,
        task_id: Id,
    ) -> Redirect:
        task = await _subscription(services, console, template_ref, task_id)
        await services.tasks.resume(task.id, principal=console.principal)
        return redirect(request, console, f"/ui/templates/{task.template_id}#subscriptions")

    @post("/templates/{template_ref:str}/subscriptions/{task_id:str}/remove")
    async def remove(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        template_ref: TemplateRef,
        task_id: Id,
    ) -> Redirect:
        task = await _subscription(services, console, template_ref, task_id)
        await services.tasks.delete(task.id, principal=console.principal)
        return redirect(request, console, f"/ui/templates/{task.template_id}#subscriptions")
