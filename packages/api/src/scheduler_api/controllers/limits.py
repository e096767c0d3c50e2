"""``/api/v1/limits``: named shared limits (operators and admins write them, anyone who reads
tasks sees them with their current use); ``/api/v1/circuits``: the circuit breakers."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, delete, get, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, PathParameter

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Services
from scheduler_api.openapi import problems
from scheduler_api.schemas.limits import CircuitList, CircuitOut, LimitList, LimitOut
from scheduler_application.limits.service import parse_limit
from scheduler_application.operations.queue_control import ensure_steers_queues
from scheduler_domain.shared_limits import validate_limit_name

LimitName = Annotated[str, PathParameter(description="Limit name", max_length=200)]
LimitBody = Annotated[
    dict[str, Any],
    Body(
        title="Limit",
        description=(
            "rate (all bound runs together, '100/s'), partition_by ('owner' or 'task') with "
            "partition_rate (each partition, '5/m'), max_concurrency (runs queued or running "
            "at once), failure_threshold and cool_down_seconds (its circuit breaker; null: the "
            "configured default), description. The whole limit: fields left out are cleared."
        ),
        examples=[
            Example(
                summary="Each owner 5/min, everyone together 100/s",
                value={"rate": "100/s", "partition_by": "owner", "partition_rate": "5/m"},
            )
        ],
    ),
]


class LimitController(Controller):
    path = "/limits"
    tags = ("limits",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @get("/", summary="Named shared limits and their current use", responses=problems())
    async def list_limits(self, services: Services, principal: CurrentPrincipal) -> LimitList:
        views = await services.limits.all(principal=principal)
        return LimitList(items=[LimitOut.of(view) for view in views])

    @get("/{name:str}", summary="One named limit and its current use", responses=problems(404))
    async def get_limit(
        self, name: LimitName, services: Services, principal: CurrentPrincipal
    ) -> LimitOut:
        return LimitOut.of(await services.limits.get(name, principal=principal))

    @put(
        "/{name:str}",
        summary="Create or replace a named limit (operators and admins)",
        description="201 when the limit is new, 200 when it replaced one of that name.",
        responses={
            201: ResponseSpec(data_container=LimitOut, description="The limit, created"),
            **problems(),
        },
    )
    async def put_limit(
        self, name: LimitName, data: LimitBody, services: Services, principal: CurrentPrincipal
    ) -> Response[LimitOut]:
        ensure_steers_queues(principal)  # the role first: a viewer learns nothing more
        view, created = await services.limits.put(parse_limit(name, data), principal=principal)
        return Response(LimitOut.of(view), status_code=201 if created else 200)

    @delete(
        "/{name:str}",
        summary="Delete a named limit (operators and admins)",
        responses=problems(404),
    )
    async def delete_limit(
        self, name: LimitName, services: Services, principal: CurrentPrincipal
    ) -> None:
        ensure_steers_queues(principal)
        await services.limits.delete(validate_limit_name(name), principal=principal)


class CircuitController(Controller):
    path = "/circuits"
    tags = ("limits",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @get(
        "/",
        summary="Circuit breakers: state, failures, when an open one lets its probe through",
        responses=problems(),
    )
    async def list_circuits(self, services: Services, principal: CurrentPrincipal) -> CircuitList:
        views = await services.limits.circuits(principal=principal)
        return CircuitList(items=[CircuitOut.of(view) for view in views])
