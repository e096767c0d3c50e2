"""``/api/v1/queues``: depth and throughput of every known queue."""

from __future__ import annotations

from litestar import Controller, get

from scheduler_api.auth import refuse_worker_role
from scheduler_api.dependencies import CurrentPrincipal, Services
from scheduler_api.openapi import problems
from scheduler_api.schemas.system import QueueList, QueueOut
from scheduler_application.status_report import RATE_WINDOW


class QueueController(Controller):
    path = "/queues"
    tags = ("queues",)
    guards = (refuse_worker_role,)

    @get(
        "/",
        summary="Queue depths and rates",
        description=(
            "Every queue a task routes to or a live worker consumes: the broker's depth and, "
            "from the database, runs pending/queued/running now and created/finished in the "
            "last minute."
        ),
        responses=problems(),
    )
    async def list_queues(self, services: Services, principal: CurrentPrincipal) -> QueueList:
        stats = await services.status.queues(principal=principal, window=RATE_WINDOW)
        return QueueList(
            items=[QueueOut.of(s) for s in stats], window_seconds=RATE_WINDOW.total_seconds()
        )
