"""The console's webhooks: the subscriptions the principal may see with their recent
deliveries, one subscription's delivery log, and — for roles that may write — create (the
secret shown once), delete, enable again (or disable) and send a test event. Everything goes
through :class:`~scheduler_application.webhooks.WebhookService`, as ``/api/v1/webhooks`` does;
the CSRF token and origin were checked by the router's hook."""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import PathParameter, QueryParameter
from litestar.response import Redirect, Template

from scheduler_api.console.context import Console, choice, page, redirect, text
from scheduler_api.controllers.webhooks import webhook_service
from scheduler_api.dependencies import Services
from scheduler_api.params import object_id
from scheduler_application.accounts.access import Principal
from scheduler_application.events.webhooks import CreatedWebhook, WebhookService
from scheduler_domain.errors import ValidationError
from scheduler_domain.status import RunStatus
from scheduler_domain.webhooks import MAX_DESCRIPTION, MAX_URL_LENGTH, TEST_EVENT

#: Subscriptions per page, and the deliveries shown under each on the list.
PAGE = 20
RECENT = 3
#: Deliveries per page of one subscription's log.
LOG_PAGE = 50
Id = Annotated[str, PathParameter(max_length=64)]
IdQuery = Annotated[str | None, QueryParameter(max_length=64)]
_SEPARATORS = re.compile(r"[\s,]+")


def _listed(value: str | None, *, field: str, limit: int = 2000) -> list[str]:
    """A list typed into one field, separated by commas or spaces."""
    found = text(value, field=field, limit=limit)
    return [item for item in _SEPARATORS.split(found) if item] if found else []


def _webhook_id(value: str) -> str:
    return object_id(value, kind="webhook", field="webhook_id")


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _list_page(
    request: Request[Any, Any, Any],
    console: Console,
    services: Services,
    *,
    after: str | None,
    created: CreatedWebhook | None = None,
    status_code: int = 200,
) -> Template:
    if services.webhooks is None:
        return page(
            request, console, "webhooks.html", title="Webhooks", configured=False, webhooks=[]
        )
    service = services.webhooks
    principal = console.principal
    found = await service.list(
        principal=principal,
        limit=PAGE + 1,
        after=object_id(after, kind="webhook", field="after") if after else None,
    )
    shown = found[:PAGE]
    recent = {w.id: await _recent(service, w.id, principal) for w in shown}
    return page(
        request,
        console,
        "webhooks.html",
        title="Webhooks",
        configured=True,
        webhooks=shown,
        recent=recent,
        next_after=shown[-1].id if len(found) > PAGE else None,
        created=created,
        statuses=list(RunStatus),
        limits={"url": MAX_URL_LENGTH, "description": MAX_DESCRIPTION},
        test_event=TEST_EVENT,
        status_code=status_code,
    )


async def _recent(service: WebhookService, webhook_id: str, principal: Principal) -> list[Any]:
    return await service.deliveries(webhook_id, principal=principal, limit=RECENT)


class WebhooksController(Controller):
    @get("/webhooks")
    async def webhooks(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        after: IdQuery = None,
    ) -> Template:
        return await _list_page(request, console, services, after=after)

    @get("/webhooks/{webhook_id:str}")
    async def webhook(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        webhook_id: Id,
        before: IdQuery = None,
    ) -> Template:
        service = webhook_service(services)
        subscription = await service.get(_webhook_id(webhook_id), principal=console.principal)
        log = await service.deliveries(
            subscription.id,
            principal=console.principal,
            limit=LOG_PAGE + 1,
            before=object_id(before, kind="delivery", field="before") if before else None,
        )
        shown = log[:LOG_PAGE]
        return page(
            request,
            console,
            "webhook.html",
            title=f"Webhook {subscription.url}",
            webhook=subscription,
            deliveries=shown,
            next_before=shown[-1].id if len(log) > LOG_PAGE else None,
            test_event=TEST_EVENT,
        )

    @post("/webhooks")
    async def create(
        self, request: Request[Any, Any, Any], console: Console, services: Services
    ) -> Template:
        form = await _form(request)
        url = text(form.get("url"), field="url", limit=MAX_URL_LENGTH)
        if url is None:
            raise ValidationError("url is required", field="url")
        task = text(form.get("task_id"), field="task_id", limit=64)
        statuses = [
            status
            for value in _listed(form.get("statuses"), field="statuses")
            if (status := choice(RunStatus, value, field="statuses")) is not None
        ]
        created = await webhook_service(services).create(
            principal=console.principal,
            url=url,
            event_types=_listed(form.get("event_types"), field="event_types"),
            task_id=object_id(task, kind="task", field="task_id") if task else None,
            statuses=statuses,
            description=text(form.get("description"), field="description", limit=MAX_DESCRIPTION)
            or "",
        )
        # The secret is shown once, on this answer (not stored in clear, and no-store).
        return await _list_page(
            request, console, services, after=None, created=created, status_code=201
        )

    @post("/webhooks/{webhook_id:str}/delete")
    async def delete(
        self, request: Request[Any, Any, Any], console: Console, services: Services, webhook_id: Id
    ) -> Redirect:
        await webhook_service(services).delete(_webhook_id(webhook_id), principal=console.principal)
        return redirect(request, console, "/ui/webhooks")

    @post("/webhooks/{webhook_id:str}/enable")
    async def enable(
        self, request: Request[Any, Any, Any], console: Console, services: Services, webhook_id: Id
    ) -> Redirect:
        return await self._switch(request, console, services, webhook_id, enabled=True)

    @post("/webhooks/{webhook_id:str}/disable")
    async def disable(
        self, request: Request[Any, Any, Any], console: Console, services: Services, webhook_id: Id
    ) -> Redirect:
        return await self._switch(request, console, services, webhook_id, enabled=False)

    @post("/webhooks/{webhook_id:str}/test")
    async def send_test(
        self, request: Request[Any, Any, Any], console: Console, services: Services, webhook_id: Id
    ) -> Redirect:
        delivery = await webhook_service(services).send_test(
            _webhook_id(webhook_id), principal=console.principal
        )
        return redirect(request, console, f"/ui/webhooks/{delivery.webhook_id}")

    async def _switch(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        webhook_id: str,
        *,
        enabled: bool,
    ) -> Redirect:
        updated = await webhook_service(services).update(
            _webhook_id(webhook_id), principal=console.principal, changes={"enabled": enabled}
        )
        return redirect(request, console, f"/ui/webhooks/{updated.id}")
