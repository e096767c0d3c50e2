"""``/api/v1/webhooks``: subscriptions to the event log, their delivery log, a test event."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Services
from scheduler_api.openapi import problems
from scheduler_api.params import object_id
from scheduler_api.schemas.webhooks import (
    CreatedWebhookOut,
    DeliveryOut,
    DeliveryPage,
    WebhookCreateIn,
    WebhookList,
    WebhookOut,
    WebhookUpdateIn,
)
from scheduler_application.errors import Unavailable
from scheduler_application.events.webhooks import WebhookService

WebhookId = Annotated[str, PathParameter(description="webhook id", max_length=64)]


def _id(webhook_id: str) -> str:
    return object_id(webhook_id, kind="webhook", field="webhook_id")


def webhook_service(services: Services) -> WebhookService:
    if services.webhooks is None:
        raise Unavailable("webhooks are not configured in this API", dependency="webhooks")
    return services.webhooks


class WebhookController(Controller):
    path = "/webhooks"
    tags = ("webhooks",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post(
        "/",
        summary="Subscribe a URL to events",
        description=(
            "The signing secret (`whsec_…`) is in the answer and nowhere else. The URL must "
            "pass the outbound policy (no loopback, private or link-local destination unless "
            "allowed by configuration). Delivery starts with the events after this moment."
        ),
        responses=problems(404),
    )
    async def create(
        self, data: JSONBody[WebhookCreateIn], services: Services, principal: CurrentPrincipal
    ) -> Response[CreatedWebhookOut]:
        created = await webhook_service(services).create(
            principal=principal,
            url=data.url,
            event_types=data.event_types,
            task_id=data.task_id,
            statuses=data.statuses,
            description=data.description,
            enabled=data.enabled,
        )
        webhook = created.subscription
        return Response(
            CreatedWebhookOut(secret=created.secret, webhook=WebhookOut.of(webhook)),
            status_code=201,
            headers={"Location": f"/api/v1/webhooks/{webhook.id}", "Cache-Control": "no-store"},
        )

    @get(
        "/", summary="List webhooks (yours; admins and operators: everyone's)", responses=problems()
    )
    async def list_webhooks(self, services: Services, principal: CurrentPrincipal) -> WebhookList:
        found = await webhook_service(services).list(principal=principal)
        return WebhookList(items=[WebhookOut.of(w) for w in found])

    @get("/{webhook_id:str}", summary="Get a webhook", responses=problems(404))
    async def get_webhook(
        self, webhook_id: WebhookId, services: Services, principal: CurrentPrincipal
    ) -> WebhookOut:
        found = await webhook_service(services).get(_id(webhook_id), principal=principal)
        return WebhookOut.of(found)

    @patch("/{webhook_id:str}", summary="Change a webhook", responses=problems(404))
    async def update(
        self,
        webhook_id: WebhookId,
        data: JSONBody[WebhookUpdateIn],
        services: Services,
        principal: CurrentPrincipal,
    ) -> WebhookOut:
        changes: dict[str, Any] = {
            name: value
            for name, value in msgspec.structs.asdict(data).items()
            if value is not msgspec.UNSET
        }
        updated = await webhook_service(services).update(
            _id(webhook_id), principal=principal, changes=changes
        )
        return WebhookOut.of(updated)

    @delete("/{webhook_id:str}", summary="Delete a webhook", responses=problems(404))
    async def remove(
        self, webhook_id: WebhookId, services: Services, principal: CurrentPrincipal
    ) -> None:
        await webhook_service(services).delete(_id(webhook_id), principal=principal)

    @get(
        "/{webhook_id:str}/deliveries",
        summary="A webhook's delivery log, newest first",
        responses=problems(404),
    )
    async def deliveries(
        self,
        webhook_id: WebhookId,
        services: Services,
        principal: CurrentPrincipal,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        before: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> DeliveryPage:
        found = await webhook_service(services).deliveries(
            _id(webhook_id), principal=principal, limit=limit, before=before
        )
        return DeliveryPage(
            items=[DeliveryOut.of(d) for d in found],
            next_before=found[-1].id if len(found) == limit else None,
        )

    @post(
        "/{webhook_id:str}/test",
        status_code=200,
        summary="Send a test event now",
        description=(
            "Sends a signed `webhook.test` event once (no retries) and answers with its "
            "delivery, also logged with the others."
        ),
        responses=problems(404),
    )
    async def send_test(
        self, webhook_id: WebhookId, services: Services, principal: CurrentPrincipal
    ) -> DeliveryOut:
        delivery = await webhook_service(services).send_test(_id(webhook_id), principal=principal)
        return DeliveryOut.of(delivery)
