"""``POST /api/v1/runs/batch``: many triggers in one request, one transaction."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, post
from litestar.params import JSONBody

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Services
from scheduler_api.openapi import problems
from scheduler_api.schemas.runs import (
    BatchIn,
    BatchOut,
    BatchRefusalOut,
    BatchResultOut,
    RunOut,
)
from scheduler_application.runs.batch_trigger import TriggerItem, TriggerOutcome
from scheduler_domain.errors import ValidationError


def _instant(text: str | None, index: int) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            "logical_time must be an RFC 3339 date-time", field=f"triggers[{index}].logical_time"
        ) from None


def _result(outcome: TriggerOutcome) -> BatchResultOut:
    return BatchResultOut(
        status=outcome.status,
        run=RunOut.of(outcome.run) if outcome.run is not None else None,
        error=(
            BatchRefusalOut(code=outcome.code, field=outcome.field, detail=outcome.detail)
            if outcome.status == "refused"
            else None
        ),
    )


class BatchController(Controller):
    path = "/runs/batch"
    tags = ("runs",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post(
        "/",
        status_code=200,
        summary="Trigger many runs in one request",
        description=(
            "Each trigger names its task and may carry its own `idempotency_key`, `priority` "
            "(0-9, over the task's) and `logical_time`. All of them are created in one "
            "transaction, through the same gates as single triggers, and published after its "
            "commit; the answer has one result per trigger, in order: `created`, `replayed` "
            "(its key named a run already: that run) or `refused` with `error.code`, "
            "`error.field` and `error.detail` — a bad trigger never fails the others. At most "
            "`api.batch_max_items` (1,000) per request."
        ),
        responses=problems(),
    )
    async def batch(
        self, data: JSONBody[BatchIn], services: Services, principal: CurrentPrincipal
    ) -> BatchOut:
        items = [
            TriggerItem(
                task_id=t.task_id,
                idempotency_key=t.idempotency_key,
                priority=t.priority,
                logical_time=_instant(t.logical_time, i),
                params=t.params,
            )
            for i, t in enumerate(data.triggers)
        ]
        outcomes = await services.batch.trigger(items, principal=principal)
        results = [_result(o) for o in outcomes]
        return BatchOut(
            results=results,
            created=sum(1 for r in results if r.status == "created"),
            replayed=sum(1 for r in results if r.status == "replayed"),
            refused=sum(1 for r in results if r.status == "refused"),
        )
