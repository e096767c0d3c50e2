"""The console's queue steering beyond pause/resume: purge (a confirmation page that states how
many pending and queued runs it would cancel, then the purge) and the queue's limits (rate limit
and max concurrency, set or cleared from a plain form). Everything goes through
:class:`QueueControl`, the use case the REST API calls; the role is checked first, so a viewer
or user learns nothing more than a 403. CSRF and origin were checked by the router's hook."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from scheduler_api.console.context import Console, page, redirect, text
from scheduler_api.dependencies import Services
from scheduler_application.operations.queue_control import QueueChanges, ensure_steers_queues
from scheduler_application.operations.status_report import RATE_WINDOW
from scheduler_domain.errors import ValidationError
from scheduler_domain.queue_settings import check_max_concurrency, validate_queue_name
from scheduler_domain.rate_limit import RateLimit

Name = Annotated[str, PathParameter(max_length=200)]


def limits_of(form: dict[str, str]) -> QueueChanges:
    """The limits form: both fields are sent; an empty field clears that limit."""
    rate = text(form.get("rate_limit"), field="rate_limit", limit=40)
    concurrency = text(form.get("max_concurrency"), field="max_concurrency", limit=12)
    cap: int | None = None
    if concurrency is not None:
        try:
            cap = int(concurrency)
        except ValueError:
            raise ValidationError(
                "max_concurrency must be a whole number (or empty for no cap)",
                field="max_concurrency",
            ) from None
    return QueueChanges(
        rate_limit=RateLimit.parse(rate) if rate is not None else None,
        max_concurrency=check_max_concurrency(cap),
    )


class QueueActionsController(Controller):
    @get("/queues/{name:str}/purge")
    async def confirm_purge(
        self, request: Request[Any, Any, Any], console: Console, services: Services, name: Name
    ) -> Template:
        ensure_steers_queues(console.principal)  # the role first: a viewer learns nothing more
        queue = validate_queue_name(name, field="name")
        stats = await services.status.queues(
            principal=console.principal, window=RATE_WINDOW, only=queue
        )
        activity = stats[0].activity
        return page(
            request,
            console,
            "queue_purge.html",
            title=f"Purge {queue}?",
            queue=queue,
            pending=activity.pending,
            queued=activity.queued,
            count=activity.pending + activity.queued,
            cancelled=None,
        )

    @post("/queues/{name:str}/purge")
    async def purge(
        self, request: Request[Any, Any, Any], console: Console, services: Services, name: Name
    ) -> Template:
        ensure_steers_queues(console.principal)
        queue = validate_queue_name(name, field="name")
        cancelled = await services.queues.purge(queue, principal=console.principal)
        return page(
            request,
            console,
            "queue_purge.html",
            title=f"Purged {queue}",
            queue=queue,
            cancelled=cancelled,
        )

    @post("/queues/{name:str}/limits")
    async def limits(
        self, request: Request[Any, Any, Any], console: Console, services: Services, name: Name
    ) -> Redirect:
        ensure_steers_queues(console.principal)
        queue = validate_queue_name(name, field="name")
        form = await request.form()
        changes = limits_of({k: v for k, v in form.items() if isinstance(v, str)})
        await services.queues.update(queue, changes, principal=console.principal)
        return redirect(request, console, "/ui/queues")
