"""The run list with its filters, shared by ``/runs`` and ``/tasks/{id}/runs``."""

from __future__ import annotations

from scheduler_api.params import open_cursor, page_size, query_instant, seal_cursor
from scheduler_api.schemas.runs import RunOut, RunPage
from scheduler_api.services import ApiOptions, ApiServices
from scheduler_application.accounts.access import Principal
from scheduler_domain.queue_settings import validate_queue_name
from scheduler_domain.run import RunTrigger
from scheduler_domain.status import RunStatus


async def list_runs(
    services: ApiServices,
    options: ApiOptions,
    principal: Principal,
    *,
    task_id: str | None,
    status: list[RunStatus] | None,
    trigger: RunTrigger | None,
    worker_id: str | None,
    created_after: str | None,
    created_before: str | None,
    limit: int,
    cursor: str | None,
    queue: str | None = None,
) -> RunPage:
    size = page_size(limit, options)
    page = await services.runs.list(
        principal=principal,
        task_id=task_id,
        statuses=status or (),
        trigger=trigger,
        worker_id=worker_id,
        queue=None if queue is None else validate_queue_name(queue, field="queue"),
        created_after=query_instant(created_after, field="created_after"),
        created_before=query_instant(created_before, field="created_before"),
        limit=size,
        cursor=open_cursor(cursor, options),
    )
    return RunPage(
        items=[RunOut.of(r) for r in page.items],
        next_cursor=seal_cursor(page.next_cursor, options),
        limit=size,
    )
