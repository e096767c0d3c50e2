"""``/api/v1/runs``: list, inspect, cancel and retry runs; read their output and audit trail."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromQuery, JSONBody, PathParameter, QueryParameter

from scheduler_api.auth import WORKERS_REFUSED, provide_principal
from scheduler_api.controllers.runs_listing import list_runs
from scheduler_api.dependencies import (
    CurrentPrincipal,
    Options,
    Services,
    services_of,
)
from scheduler_api.openapi import problems
from scheduler_api.params import LIMIT_DESCRIPTION, Cursor, InstantQuery, object_id
from scheduler_api.schemas.runs import RunEventList, RunEventOut, RunOut, RunOutputOut, RunPage
from scheduler_domain.run import RunTrigger
from scheduler_domain.status import RunStatus

RunId = Annotated[str, PathParameter(description="Run id", max_length=64)]


class CancelIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = "cancelled by user"


def _id(run_id: str) -> str:
    return object_id(run_id, kind="run", field="run_id")


class RunController(Controller):
    path = "/runs"
    tags = ("runs",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @get("/", summary="List runs, newest first", responses=problems(404))
    async def list_all(
        self,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        task_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        status: FromQuery[list[RunStatus] | None] = None,
        trigger: FromQuery[RunTrigger | None] = None,
        worker_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        queue: Annotated[
            str | None,
            QueryParameter(
                max_length=100,
                description="the queue the run was published to (a task's queue, or a "
                "worker's direct queue `worker.<id>`)",
            ),
        ] = None,
        created_after: InstantQuery = None,
        created_before: InstantQuery = None,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 50,
        cursor: Cursor = None,
    ) -> RunPage:
        return await list_runs(
            services,
            options,
            principal,
            task_id=object_id(task_id, kind="task", field="task_id") if task_id else None,
            status=status,
            trigger=trigger,
            worker_id=worker_id,
            queue=queue,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )

    @get("/{run_id:str}", summary="Get a run", responses=problems(404))
    async def get_run(self, run_id: RunId, request: Request[Any, Any, Any]) -> RunOut:
        run = await services_of(request).runs.get(_id(run_id), principal=provide_principal(request))
        return RunOut.of(run)

    @post(
        "/{run_id:str}/cancel",
        status_code=200,
        summary="Cancel a pending, queued or running run",
        responses=problems(404, 409),
    )
    async def cancel(
        self,
        run_id: RunId,
        services: Services,
        principal: CurrentPrincipal,
        data: JSONBody[CancelIn | None] = None,
    ) -> RunOut:
        reason = data.reason if data is not None else CancelIn().reason
        run = await services.runs.cancel(_id(run_id), principal=principal, reason=reason)
        return RunOut.of(run)

    @post(
        "/{run_id:str}/retry",
        summary="Retry a failed, lost, timed-out, dead-lettered or cancelled run",
        responses=problems(404, 409),
    )
    async def retry(
        self, run_id: RunId, services: Services, principal: CurrentPrincipal
    ) -> Response[RunOut]:
        run = await services.runs.retry(_id(run_id), principal=principal)
        return Response(
            RunOut.of(run),
            status_code=201,
            headers={"Location": f"/api/v1/runs/{run.id}"},
        )

    @get("/{run_id:str}/output", summary="Captured output of a run", responses=problems(404))
    async def output(
        self, run_id: RunId, services: Services, principal: CurrentPrincipal
    ) -> RunOutputOut:
        run = await services.runs.get(_id(run_id), principal=principal)
        return RunOutputOut(
            run_id=run.id, status=run.status, output=run.output, finished=run.status.is_final
        )

    @get("/{run_id:str}/events", summary="Audit trail of a run", responses=problems(404))
    async def events(
        self, run_id: RunId, services: Services, principal: CurrentPrincipal
    ) -> RunEventList:
        events = await services.runs.events(_id(run_id), principal=principal)
        return RunEventList(items=[RunEventOut.of(e) for e in events])
