"""``/api/v1/templates``: task types admins and operators define, and users subscribe to;
``/api/v1/subscriptions/{task_id}``: a subscription's own parameters and schedule."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, delete, get, patch, post
from litestar.params import Body, HeaderParameter, JSONBody, PathParameter, QueryParameter

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Options, Services
from scheduler_api.openapi import problems
from scheduler_api.params import (
    LIMIT_DESCRIPTION,
    Cursor,
    object_id,
    open_cursor,
    page_size,
    seal_cursor,
)
from scheduler_api.schemas.tasks import TaskOut, TaskPage, task_etag
from scheduler_api.schemas.templates import (
    BulkSubscriptionsOut,
    SubscriptionResultOut,
    TemplateOut,
    TemplatePage,
)
from scheduler_domain.errors import ValidationError

TemplateId = Annotated[str, PathParameter(description="template id or name", max_length=200)]
TaskId = Annotated[str, PathParameter(description="the subscription's task id", max_length=64)]
TemplateBody = Annotated[
    dict[str, Any],
    Body(
        title="Template",
        description=(
            "name, executor, params (the parameter template: executor params with {{name}} "
            "placeholders), params_schema (JSON Schema 2020-12 of the subscribers' "
            "parameters; local $ref only), schedule, schedule_bounds "
            "{min_interval_seconds, allow_custom}, policies {queue, priority, labels, "
            "strategy, timeout_seconds, retry, concurrency, max_concurrent, misfire, "
            "spread_seconds, rate_limit, limits}. See docs/templates.md."
        ),
    ),
]
SubscriptionBody = Annotated[
    dict[str, Any],
    Body(
        title="Subscription",
        description=(
            "params (validated against the template's params_schema; 422 names the field, "
            "e.g. params.city), optional name (default: the template's), schedule (within "
            "the template's bounds; 422 names schedule), enabled, owner (admin/operator: a "
            "username to subscribe on behalf of)."
        ),
    ),
]


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 9:
        raise ValidationError(
            'If-Match must be the template\'s version, e.g. "3"', field="If-Match"
        )
    return int(text)


def _created(task_out: TaskOut) -> Response[TaskOut]:
    return Response(
        task_out,
        status_code=201,
        headers={"Location": f"/api/v1/tasks/{task_out.id}", "ETag": task_etag(task_out.version)},
    )


class TemplateController(Controller):
    path = "/templates"
    tags = ("templates",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post("/", summary="Create a template (admin, operator)", responses=problems(403, 409))
    async def create(
        self, data: TemplateBody, services: Services, principal: CurrentPrincipal
    ) -> Response[TemplateOut]:
        template = await services.templates.create(data, principal=principal)
        return Response(
            TemplateOut.of(template),
            status_code=201,
            headers={"Location": f"/api/v1/templates/{template.id}"},
        )

    @get("/", summary="List templates", responses=problems())
    async def list_templates(
        self,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 50,
        cursor: Cursor = None,
    ) -> TemplatePage:
        size = page_size(limit, options)
        page = await services.templates.list(
            principal=principal, limit=size, cursor=open_cursor(cursor, options)
        )
        return TemplatePage(
            items=[TemplateOut.of(t) for t in page.items],
            next_cursor=seal_cursor(page.next_cursor, options),
            limit=size,
        )

    @get("/{template_id:str}", summary="Get a template (by id or name)", responses=problems(404))
    async def get_template(
        self, template_id: TemplateId, services: Services, principal: CurrentPrincipal
    ) -> TemplateOut:
        return TemplateOut.of(await services.templates.get(template_id, principal=principal))

    @patch(
        "/{template_id:str}",
        summary="Change a template (admin, operator): every subscription follows",
        description=(
            "Bumps the version and rewrites every subscription from it in the same "
            "transaction (executor, params filled in with each subscriber's parameters, "
            "policies); 409 naming the subscriptions that would become invalid, and nothing "
            'changes. `If-Match: "<version>"` refuses a stale edit.'
        ),
        responses=problems(403, 404, 409),
    )
    async def update(
        self,
        template_id: TemplateId,
        data: TemplateBody,
        services: Services,
        principal: CurrentPrincipal,
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", max_length=20)] = None,
    ) -> TemplateOut:
        template = await services.templates.update(
            template_id, data, principal=principal, expected_version=_version(if_match)
        )
        return TemplateOut.of(template)

    @delete(
        "/{template_id:str}",
        summary="Delete a template without subscriptions (admin, operator)",
        responses=problems(403, 404, 409),
    )
    async def remove(
        self, template_id: TemplateId, services: Services, principal: CurrentPrincipal
    ) -> None:
        await services.templates.delete(template_id, principal=principal)

    @post(
        "/{template_id:str}/subscriptions",
        summary="Subscribe: your task made from the template",
        responses=problems(403, 404, 409),
    )
    async def subscribe(
        self,
        template_id: TemplateId,
        data: SubscriptionBody,
        services: Services,
        principal: CurrentPrincipal,
    ) -> Response[TaskOut]:
        task = await services.templates.subscribe(template_id, data, principal=principal)
        return _created(TaskOut.of(task))

    @post(
        "/{template_id:str}/subscriptions/bulk",
        status_code=200,
        summary="Subscribe many users at once (admin, operator)",
        description=(
            'Body `{"subscriptions": [{"owner": "alice", "params": {...}}, ...]}` (at most '
            "1,000). Each item is answered on its own, in order: `created` with the task, or "
            "`refused` with `error.code`, `error.field` and `error.detail`; a refused item "
            "never fails the others."
        ),
        responses=problems(403, 404),
    )
    async def subscribe_bulk(
        self,
        template_id: TemplateId,
        data: JSONBody[dict[str, Any]],
        services: Services,
        principal: CurrentPrincipal,
    ) -> BulkSubscriptionsOut:
        for key in data:
            if key != "subscriptions":
                raise ValidationError(f"unknown field {key!r}", field=str(key))
        outcomes = await services.templates.subscribe_many(
            template_id, data.get("subscriptions", []), principal=principal
        )
        results = [SubscriptionResultOut.of(i, o) for i, o in enumerate(outcomes)]
        return BulkSubscriptionsOut(
            results=results,
            created=sum(1 for r in results if r.status == "created"),
            refused=sum(1 for r in results if r.status == "refused"),
        )

    @get(
        "/{template_id:str}/subscriptions",
        summary="The template's subscriptions (yours; admin, operator: everyone's)",
        responses=problems(404),
    )
    async def list_subscriptions(
        self,
        template_id: TemplateId,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 50,
        cursor: Cursor = None,
    ) -> TaskPage:
        size = page_size(limit, options)
        page = await services.templates.subscriptions(
            template_id, principal=principal, limit=size, cursor=open_cursor(cursor, options)
        )
        return TaskPage(
            items=[TaskOut.of(t) for t in page.items],
            next_cursor=seal_cursor(page.next_cursor, options),
            limit=size,
        )


class SubscriptionController(Controller):
    path = "/subscriptions"
    tags = ("templates",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @patch(
        "/{task_id:str}",
        summary="Change a subscription's params, schedule or name",
        description=(
            "`params` merge over the subscription's own (null removes one) and are validated "
            "against the template's schema; `schedule: null` goes back to the template's. "
            "Pause, resume, trigger and delete it as any task (`/api/v1/tasks/{id}/...`)."
        ),
        responses=problems(404, 409),
    )
    async def update(
        self,
        task_id: TaskId,
        data: JSONBody[dict[str, Any]],
        services: Services,
        principal: CurrentPrincipal,
    ) -> TaskOut:
        task_id = object_id(task_id, kind="subscription", field="task_id")
        task = await services.templates.update_subscription(task_id, data, principal=principal)
        return TaskOut.of(task)
