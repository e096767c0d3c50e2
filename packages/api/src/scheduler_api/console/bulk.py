"""Bulk cancel or retry of every run matching the runs page's filters: a confirmation page
that states the count, then the action run by run through the same use cases (each one may
still be refused: a run that finished meanwhile cannot be cancelled).

And of hand-picked runs (the runs page's checkboxes, a plain form): one bulk operation by ids
(:class:`BulkService`, as ``POST /api/v1/runs/bulk``), waited for a few seconds, answered with
every item's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import QueryParameter
from litestar.response import Template

from scheduler_api.console.context import Console, choice, page, queue_filter, text
from scheduler_api.dependencies import Services
from scheduler_api.params import object_id, query_instant
from scheduler_api.services import ApiServices
from scheduler_application.accounts.access import Principal, ensure_can_write_tasks
from scheduler_application.errors import Conflict, NotFound
from scheduler_application.operations.bulk import MAX_IDS
from scheduler_application.operations.bulk_operations import BulkAction
from scheduler_application.operations.bulk_operations import Selection as Picked
from scheduler_domain.errors import DomainError, ValidationError
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus

#: The most runs one bulk action touches; the page says so when more match.
BULK_CAP = 1000
_PAGE = 200
_RETRYABLE = frozenset(
    {
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.LOST,
        RunStatus.DEAD_LETTERED,
        RunStatus.CANCELLED,
    }
)
Query = Annotated[str | None, QueryParameter(max_length=200)]
ACTIONS = ("cancel", "retry")
#: A hand-picked selection's action, by the form's ``action`` value.
PICKED_ACTIONS = {"cancel": BulkAction.CANCEL_RUNS, "retry": BulkAction.RETRY_RUNS}
#: How long the answer waits for the operation (it goes on in the background after that).
PICKED_WAIT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Selection:
    action: str
    status: RunStatus | None
    task_id: str | None
    trigger: RunTrigger | None
    worker_id: str | None
    queue: str | None
    created_after: datetime | None
    created_before: datetime | None

    @classmethod
    def parse(cls, values: dict[str, str | None]) -> Selection:
        action = values.get("action") or ""
        if action not in ACTIONS:
            raise ValidationError("action must be cancel or retry", field="action")
        task = text(values.get("task_id"), field="task_id")
        return cls(
            action=action,
            status=choice(RunStatus, values.get("status"), field="status"),
            task_id=object_id(task, kind="task", field="task_id") if task else None,
            trigger=choice(RunTrigger, values.get("trigger"), field="trigger"),
            worker_id=text(values.get("worker_id"), field="worker_id", limit=64),
            queue=queue_filter(values.get("queue")),
            created_after=query_instant(
                text(values.get("created_after"), field="created_after", limit=64),
                field="created_after",
            ),
            created_before=query_instant(
                text(values.get("created_before"), field="created_before", limit=64),
                field="created_before",
            ),
        )

    def fields(self) -> dict[str, str]:
        """The selection as form fields, to carry it from the confirmation to the action."""
        values = {
            "action": self.action,
            "status": self.status.value if self.status else "",
            "task_id": self.task_id or "",
            "trigger": self.trigger.value if self.trigger else "",
            "worker_id": self.worker_id or "",
            "queue": self.queue or "",
            "created_after": self.created_after.isoformat() if self.created_after else "",
            "created_before": self.created_before.isoformat() if self.created_before else "",
        }
        return {k: v for k, v in values.items() if v}

    def eligible(self, run: TaskRun) -> bool:
        if self.action == "cancel":
            return not run.status.is_final
        return run.status in _RETRYABLE

    async def matching(self, services: ApiServices, principal: Principal) -> tuple[list[str], bool]:
        """Ids of the runs the action applies to (at most :data:`BULK_CAP`), and whether more
        matched."""
        ids: list[str] = []
        cursor: str | None = None
        while True:
            result = await services.runs.list(
                principal=principal,
                task_id=self.task_id,
                statuses=(self.status,) if self.status else (),
                trigger=self.trigger,
                worker_id=self.worker_id,
                queue=self.queue,
                created_after=self.created_after,
                created_before=self.created_before,
                limit=_PAGE,
                cursor=cursor,
            )
            for run in result.items:
                if self.eligible(run):
                    if len(ids) == BULK_CAP:
                        return ids, True
                    ids.append(run.id)
            cursor = result.next_cursor
            if cursor is None:
                return ids, False


class BulkController(Controller):
    @get("/runs/bulk")
    async def confirm(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
    ) -> Template:
        ensure_can_write_tasks(console.principal)
        selection = Selection.parse(dict(request.query_params.items()))
        ids, more = await selection.matching(services, console.principal)
        return page(
            request,
            console,
            "bulk.html",
            title="Confirm",
            selection=selection,
            fields=selection.fields(),
            count=len(ids),
            more=more,
            cap=BULK_CAP,
            done=None,
        )

    @post("/runs/bulk")
    async def execute(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
    ) -> Template:
        ensure_can_write_tasks(console.principal)
        form = await request.form()
        selection = Selection.parse({k: v for k, v in form.items() if isinstance(v, str)})
        ids, more = await selection.matching(services, console.principal)
        done = refused = 0
        for run_id in ids:
            try:
                if selection.action == "cancel":
                    await services.runs.cancel(
                        run_id, principal=console.principal, reason="cancelled from the console"
                    )
                else:
                    await services.runs.retry(run_id, principal=console.principal)
                done += 1
            except (Conflict, NotFound, DomainError):
                refused += 1  # moved on since it was listed
        return page(
            request,
            console,
            "bulk.html",
            title="Done",
            selection=selection,
            fields=selection.fields(),
            count=len(ids),
            more=more,
            cap=BULK_CAP,
            done=done,
            refused=refused,
        )

    @post("/runs/selected")
    async def selected(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
    ) -> Template:
        ensure_can_write_tasks(console.principal)  # the role first: a viewer learns nothing more
        form = await request.form()
        action = PICKED_ACTIONS.get(str(form.get("action") or ""))
        if action is None:
            raise ValidationError("action must be cancel or retry", field="action")
        ids = list(dict.fromkeys(v for v in form.getall("ids", []) if isinstance(v, str)))
        if not ids:
            raise ValidationError("select at least one run (ids)", field="ids")
        if len(ids) > MAX_IDS:
            raise ValidationError(f"at most {MAX_IDS} runs at once", field="ids")
        picked = Picked(ids=tuple(object_id(v, kind="run", field="ids") for v in ids))
        operation = await services.bulk.start(action, picked, principal=console.principal)
        operation = await services.bulk.wait(
            operation.id, principal=console.principal, timeout=PICKED_WAIT_SECONDS
        )
        return page(
            request,
            console,
            "bulk_selected.html",
            title="Done" if operation.finished else "Under way",
            verb="cancel" if action is BulkAction.CANCEL_RUNS else "retry",
            operation=operation,
        )
