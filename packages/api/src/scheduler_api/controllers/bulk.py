"""Bulk operations: ``POST /api/v1/runs/bulk``, ``POST /api/v1/tasks/bulk`` and
``GET /api/v1/operations/{id}`` to follow one."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Services
from scheduler_api.openapi import problems
from scheduler_api.params import object_id
from scheduler_api.schemas.bulk import BulkRunsIn, BulkTasksIn, DryRunOut, OperationOut
from scheduler_application.accounts.access import Principal
from scheduler_application.operations.bulk_operations import BulkAction, Selection
from scheduler_domain.errors import ValidationError

_RESPONSES = {
    **problems(),
    202: ResponseSpec(
        data_container=OperationOut,
        description="Still running: follow the operation at Location",
        generate_examples=False,
    ),
}
OperationId = Annotated[str, PathParameter(description="Operation id", max_length=64)]

_DESCRIPTION = (
    "Select by `ids` (at most 1,000; an outcome per item) or by `filter` (the list endpoint's "
    "filters; at most `api.bulk_max_items` matches, frozen at the start). `dry_run` answers "
    "the count only. Otherwise the operation runs as one job: the answer is the operation — "
    "200 when it finished within `wait_seconds`, else 202 with `Location` to follow it. Each "
    "item goes through the same rules and events as its single call; a run or task already in "
    "the wanted state is `skipped`, one that does not exist (or is not yours) `failed`."
)


def _selection(ids: list[str] | None, selection_filter: Any) -> Selection:
    if (ids is None) == (selection_filter is None):
        raise ValidationError("give either ids or filter", field="ids")
    if ids is not None:
        return Selection(ids=tuple(ids))
    values = {k: v for k, v in msgspec.structs.asdict(selection_filter).items() if v is not None}
    return Selection(filter=values)


async def _start(
    services: Services,
    principal: Principal,
    action: BulkAction,
    selection: Selection,
    *,
    dry_run: bool,
    wait_seconds: float,
) -> Response[OperationOut | DryRunOut]:
    if dry_run:
        matched = await services.bulk.count(action, selection, principal=principal)
        return Response[OperationOut | DryRunOut](
            DryRunOut(action=action.value, matched=matched), status_code=200
        )
    operation = await services.bulk.start(action, selection, principal=principal)
    operation = await services.bulk.wait(operation.id, principal=principal, timeout=wait_seconds)
    return Response[OperationOut | DryRunOut](
        OperationOut.of(operation),
        status_code=200 if operation.finished else 202,
        headers={"Location": f"/api/v1/operations/{operation.id}"},
    )


class BulkRunsController(Controller):
    path = "/runs/bulk"
    tags = ("runs",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post(
        "/",
        summary="Cancel, retry or re-trigger runs in bulk",
        description=_DESCRIPTION,
        status_code=200,
        responses=_RESPONSES,
    )
    async def bulk_runs(
        self, data: JSONBody[BulkRunsIn], services: Services, principal: CurrentPrincipal
    ) -> Response[OperationOut | DryRunOut]:
        return await _start(
            services,
            principal,
            BulkAction(f"runs.{data.action}"),
            _selection(data.ids, data.filter),
            dry_run=data.dry_run,
            wait_seconds=data.wait_seconds,
        )


class BulkTasksController(Controller):
    path = "/tasks/bulk"
    tags = ("tasks",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post(
        "/",
        summary="Pause, resume or delete tasks in bulk",
        description=_DESCRIPTION,
        status_code=200,
        responses=_RESPONSES,
    )
    async def bulk_tasks(
        self, data: JSONBody[BulkTasksIn], services: Services, principal: CurrentPrincipal
    ) -> Response[OperationOut | DryRunOut]:
        return await _start(
            services,
            principal,
            BulkAction(f"tasks.{data.action}"),
            _selection(data.ids, data.filter),
            dry_run=data.dry_run,
            wait_seconds=data.wait_seconds,
        )


class OperationController(Controller):
    path = "/operations"
    tags = ("operations",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @get(
        "/{operation_id:str}", summary="A bulk operation and its progress", responses=problems(404)
    )
    async def get_operation(
        self, operation_id: OperationId, services: Services, principal: CurrentPrincipal
    ) -> OperationOut:
        key = object_id(operation_id, kind="operation", field="operation_id")
        return OperationOut.of(await services.bulk.get(key, principal=principal))
