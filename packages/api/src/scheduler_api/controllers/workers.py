"""``/api/v1/workers``: list, inspect, drain and undrain workers (drain and undrain: admins
and operators)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import FromQuery, PathParameter, QueryParameter

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
    slice_page,
)
from scheduler_api.schemas.workers import WorkerOut, WorkerPage
from scheduler_domain.worker import WorkerStatus

WorkerId = Annotated[str, PathParameter(description="Worker id", max_length=64)]


def _id(worker_id: str) -> str:
    return object_id(worker_id, kind="worker", field="worker_id")


class WorkerController(Controller):
    path = "/workers"
    tags = ("workers",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @get("/", summary="List workers", responses=problems())
    async def list_workers(
        self,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        status: FromQuery[WorkerStatus | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 50,
        cursor: Cursor = None,
    ) -> WorkerPage:
        size = page_size(limit, options)
        workers = await services.workers.list(principal=principal, status=status)
        items, next_cursor = slice_page(
            workers,
            key=lambda w: (w.name, w.id),
            limit=size,
            cursor=open_cursor(cursor, options),
        )
        return WorkerPage(
            items=[WorkerOut.of(w) for w in items],
            next_cursor=seal_cursor(next_cursor, options),
            limit=size,
        )

    @get("/{worker_id:str}", summary="Get a worker", responses=problems(404))
    async def get_worker(
        self, worker_id: WorkerId, services: Services, principal: CurrentPrincipal
    ) -> WorkerOut:
        return WorkerOut.of(await services.workers.get(_id(worker_id), principal=principal))

    @post(
        "/{worker_id:str}/drain",
        status_code=200,
        summary="Stop a worker taking new runs",
        description=(
            "The worker finishes the runs it holds and stays registered, heartbeating, as "
            "`draining` until it is undrained (or stopped)."
        ),
        responses=problems(404),
    )
    async def drain(
        self, worker_id: WorkerId, services: Services, principal: CurrentPrincipal
    ) -> WorkerOut:
        return WorkerOut.of(await services.workers.drain(_id(worker_id), principal=principal))

    @post(
        "/{worker_id:str}/undrain",
        status_code=200,
        summary="Let a drained worker take runs again",
        description="409 for an offline worker: that process is gone.",
        responses=problems(404, 409),
    )
    async def undrain(
        self, worker_id: WorkerId, services: Services, principal: CurrentPrincipal
    ) -> WorkerOut:
        return WorkerOut.of(await services.workers.undrain(_id(worker_id), principal=principal))
