"""``/api/v1/worker``: the worker protocol over HTTP, for workers without database access.

Register, then loop: claim (long-poll) → heartbeat every few seconds with ``(run_id, token)``
→ complete with the outcome. Only the ``worker`` and ``admin`` roles may call these, and a
worker id only with the credential that registered it (any other gets 404, as for an unknown
worker, so worker ids cannot be probed).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from litestar import Controller, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter

from scheduler_api.dependencies import CurrentPrincipal, Services
from scheduler_api.errors import HeartbeatConflict
from scheduler_api.openapi import problems
from scheduler_api.params import object_id
from scheduler_api.schemas.runs import RunOut
from scheduler_api.schemas.workers import (
    ClaimOut,
    HeartbeatIn,
    HeartbeatOut,
    OutcomeIn,
    RegisterIn,
    ReleaseIn,
    SettlementOut,
    WorkerOut,
    WorkerRef,
)
from scheduler_application.execution.remote_workers import MAX_WAIT
from scheduler_application.execution.retries import Settlement
from scheduler_application.execution.service import RELEASE_REASON, ActiveRun
from scheduler_application.execution.workers import RegisterWorker
from scheduler_application.ports.executor import ExecutionResult

RunId = Annotated[str, PathParameter(description="Run id", max_length=64)]
#: Allowed in outcome bodies (the rest of the API refuses NUL characters): output is scrubbed.
ALLOW_NUL = "allow_nul"


def _worker_id(worker_id: str) -> str:
    return object_id(worker_id, kind="worker", field="worker_id")


def _run_id(run_id: str) -> str:
    return object_id(run_id, kind="run", field="run_id")


def _scrub(value: Any) -> Any:
    """NUL characters cannot be stored (PostgreSQL text and JSON refuse them)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def _settlement(settlement: Settlement) -> SettlementOut:
    return SettlementOut(
        run=RunOut.of(settlement.run),
        retry=RunOut.of(settlement.retry) if settlement.retry is not None else None,
        dead_lettered=settlement.dead_lettered,
    )


class WorkerProtocolController(Controller):
    path = "/worker"
    tags = ("worker-protocol",)

    @post("/register", summary="Register a worker", responses=problems())
    async def register(
        self, data: JSONBody[RegisterIn], services: Services, principal: CurrentPrincipal
    ) -> Response[WorkerOut]:
        worker = await services.remote_workers.register(
            RegisterWorker(
                name=data.name,
                hostname=data.hostname,
                pid=data.pid,
                queues=tuple(dict.fromkeys(data.queues)),
                capacity=data.capacity,
                labels=frozenset(data.labels),
                software_version=data.version,
            ),
            principal=principal,
        )
        return Response(WorkerOut.of(worker), status_code=201)

    @post(
        "/deregister",
        status_code=200,
        summary="Deregister (runs still held are retried at once)",
        responses=problems(404),
    )
    async def deregister(
        self, data: JSONBody[WorkerRef], services: Services, principal: CurrentPrincipal
    ) -> WorkerOut:
        worker = await services.remote_workers.deregister(
            _worker_id(data.worker_id), principal=principal
        )
        return WorkerOut.of(worker)

    @post(
        "/claim",
        status_code=200,
        summary="Claim the next run (long-poll)",
        description=(
            "Waits up to `wait` seconds for a queued run on the worker's queues. 200 with the "
            "run, its fencing token and lease expiry; 204 when none came (or the worker is "
            "draining)."
        ),
        responses={
            **problems(404),
            204: ResponseSpec(
                data_container=None, description="No run within the wait", generate_examples=False
            ),
        },
    )
    async def claim(
        self,
        data: JSONBody[WorkerRef],
        services: Services,
        principal: CurrentPrincipal,
        wait: Annotated[
            float, QueryParameter(ge=0, le=MAX_WAIT.total_seconds(), description="Seconds to wait")
        ] = 10.0,
    ) -> Response[ClaimOut]:
        claimed = await services.remote_workers.claim(
            _worker_id(data.worker_id), principal=principal, wait=timedelta(seconds=wait)
        )
        if claimed is None:
            return Response(None, status_code=204)  # type: ignore[arg-type]
        return Response(ClaimOut.of(claimed), status_code=200)

    @post(
        "/heartbeat",
        status_code=200,
        summary="Renew the leases of the runs the worker holds",
        description=(
            "200 when every lease was renewed. 409 (with `stop`, the runs to abandon) when a "
            "lease is gone or a token is stale — the run was cancelled, reaped or claimed "
            "again — or the run is held by another worker, whose lease is never renewed. The "
            "leases of the worker's other runs were renewed all the same."
        ),
        responses=problems(404, 409),
    )
    async def heartbeat(
        self, data: JSONBody[HeartbeatIn], services: Services, principal: CurrentPrincipal
    ) -> HeartbeatOut:
        held = [ActiveRun(run_id=item.run_id, token=item.token) for item in data.runs]
        reply = await services.remote_workers.heartbeat(
            _worker_id(data.worker_id), held, principal=principal
        )
        if reply.stop:
            raise HeartbeatConflict(list(reply.stop))
        return HeartbeatOut(status=reply.status, renewed=[item.run_id for item in held])

    @post(
        "/runs/{run_id:str}/complete",
        status_code=200,
        summary="Report how a run ended",
        description=(
            "409 when the worker does not hold the run under this token. `output` is cut to "
            "`worker.output_limit_bytes` (64 KiB by default) and `error` to 4 KiB, each with a "
            "`[… truncated: N bytes dropped]` marker."
        ),
        responses=problems(404, 409),
        opt={ALLOW_NUL: True},
    )
    async def complete(
        self,
        run_id: RunId,
        data: JSONBody[OutcomeIn],
        services: Services,
        principal: CurrentPrincipal,
    ) -> SettlementOut:
        settlement = await services.remote_workers.complete(
            _run_id(run_id),
            worker_id=data.worker_id,
            token=data.token,
            result=ExecutionResult(
                status=data.status,
                result=_scrub(data.result),
                error=_scrub(data.error),
                output=_scrub(data.output),
            ),
            principal=principal,
        )
        return _settlement(settlement)

    @post(
        "/runs/{run_id:str}/release",
        status_code=200,
        summary="Give a run back (draining): it is retried at once",
        responses=problems(404, 409),
    )
    async def release(
        self,
        run_id: RunId,
        data: JSONBody[ReleaseIn],
        services: Services,
        principal: CurrentPrincipal,
    ) -> SettlementOut:
        settlement = await services.remote_workers.release(
            _run_id(run_id),
            worker_id=data.worker_id,
            token=data.token,
            principal=principal,
            reason=data.reason or RELEASE_REASON,
        )
        return _settlement(settlement)
