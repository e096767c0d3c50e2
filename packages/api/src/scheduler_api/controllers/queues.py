"""``/api/v1/queues``: depth, throughput and settings of every known queue; operators and
admins pause, resume, purge and limit them."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, patch, post
from litestar.openapi.spec import Example
from litestar.params import Body, PathParameter

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Services
from scheduler_api.openapi import problems
from scheduler_api.schemas.queues import PurgeOut, QueueList, QueueOut, queue_changes
from scheduler_application.accounts.access import Principal
from scheduler_application.operations.queue_control import ensure_steers_queues
from scheduler_application.operations.status_report import RATE_WINDOW
from scheduler_domain.queue_settings import QueueSettings, validate_queue_name

QueueName = Annotated[str, PathParameter(description="Queue name", max_length=200)]
QueuePatch = Annotated[
    dict[str, Any],
    Body(
        title="QueuePatch",
        description=(
            "rate_limit ('10/s', '5/10s', '100/m') and/or max_concurrency (runs queued or "
            "running at once, fleet-wide); null clears a field, a field left out is kept"
        ),
        examples=[
            Example(summary="Limit a queue", value={"rate_limit": "10/s", "max_concurrency": 5}),
            Example(summary="Clear the rate limit", value={"rate_limit": None}),
        ],
    ),
]


def _name(name: str) -> str:
    return validate_queue_name(name, field="name")


async def _one(services: Services, principal: Principal, name: str) -> QueueOut:
    stats = await services.status.queues(principal=principal, window=RATE_WINDOW, only=name)
    view = await services.queues.get(name, principal=principal)
    return QueueOut.of(stats[0], view)


class QueueController(Controller):
    path = "/queues"
    tags = ("queues",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @get(
        "/",
        summary="Queue depths, rates and settings",
        description=(
            "Every queue a task routes to, a live worker consumes, or that has settings: the "
            "broker's depth and, from the database, runs pending/queued/running now and "
            "created/finished in the last minute; and its settings (paused, limits)."
        ),
        responses=problems(),
    )
    async def list_queues(self, services: Services, principal: CurrentPrincipal) -> QueueList:
        views = await services.queues.all(principal=principal)
        stats = await services.status.queues(
            principal=principal, window=RATE_WINDOW, also=list(views)
        )
        items = [
            # A queue missing from ``views`` has neither stored settings nor a configured limit.
            QueueOut.of(s, views.get(s.name) or services.queues.view(QueueSettings(name=s.name)))
            for s in stats
        ]
        return QueueList(items=items, window_seconds=RATE_WINDOW.total_seconds())

    @get("/{name:str}", summary="One queue: depth, rates and settings", responses=problems())
    async def get_queue(
        self, name: QueueName, services: Services, principal: CurrentPrincipal
    ) -> QueueOut:
        return await _one(services, principal, _name(name))

    @post(
        "/{name:str}/pause",
        status_code=200,
        summary="Pause a queue (operators and admins)",
        description=(
            "Its runs wait: queued ones go back to pending and nothing of the queue is handed "
            "to workers until it is resumed. Runs already running finish."
        ),
        responses=problems(),
    )
    async def pause(
        self, name: QueueName, services: Services, principal: CurrentPrincipal
    ) -> QueueOut:
        ensure_steers_queues(principal)  # the role first: a viewer learns nothing more
        await services.queues.pause(_name(name), principal=principal)
        return await _one(services, principal, name)

    @post(
        "/{name:str}/resume",
        status_code=200,
        summary="Resume a paused queue (operators and admins)",
        responses=problems(),
    )
    async def resume(
        self, name: QueueName, services: Services, principal: CurrentPrincipal
    ) -> QueueOut:
        ensure_steers_queues(principal)  # the role first: a viewer learns nothing more
        await services.queues.resume(_name(name), principal=principal)
        return await _one(services, principal, name)

    @post(
        "/{name:str}/purge",
        status_code=200,
        summary="Cancel every pending and queued run of a queue (operators and admins)",
        description="Each run gets its ordinary cancel event; answers how many were cancelled.",
        responses=problems(),
    )
    async def purge(
        self, name: QueueName, services: Services, principal: CurrentPrincipal
    ) -> PurgeOut:
        ensure_steers_queues(principal)  # the role first: a viewer learns nothing more
        cancelled = await services.queues.purge(_name(name), principal=principal)
        return PurgeOut(queue=name, cancelled=cancelled)

    @patch(
        "/{name:str}",
        summary="Set or clear a queue's rate limit and max concurrency (operators and admins)",
        responses=problems(),
    )
    async def update(
        self, name: QueueName, data: QueuePatch, services: Services, principal: CurrentPrincipal
    ) -> QueueOut:
        ensure_steers_queues(principal)  # the role first: a viewer learns nothing more
        await services.queues.update(_name(name), queue_changes(data), principal=principal)
        return await _one(services, principal, name)
