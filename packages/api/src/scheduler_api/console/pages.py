"""The console's pages (GET): each reads through the same use cases as the REST API, so a
principal sees exactly what the API would show it and an object it may not see is a 404."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import PathParameter, QueryParameter
from litestar.response import Template

from scheduler_api.console.charts import (
    lateness_per_minute,
    queue_depths,
    runs_per_minute,
    slot_lateness,
)
from scheduler_api.console.context import Console, choice, page, queue_filter, task_names, text
from scheduler_api.console.views import dependency_graph, task_zone
from scheduler_api.controllers.runs_listing import list_runs
from scheduler_api.dependencies import Options, Services
from scheduler_api.params import Cursor, object_id, open_cursor, seal_cursor
from scheduler_application.errors import NotFound
from scheduler_application.operations.status_report import RATE_WINDOW
from scheduler_domain.errors import ValidationError
from scheduler_domain.run import RunTrigger
from scheduler_domain.status import RunStatus
from scheduler_domain.worker import WorkerStatus

PAGE = 50
Query = Annotated[str | None, QueryParameter(max_length=200)]
StateQuery = Annotated[str | None, QueryParameter(name="state", max_length=20)]
Id = Annotated[str, PathParameter(max_length=64)]
#: How many earlier attempts a run page follows back.
MAX_CHAIN = 25


class PagesController(Controller):
    @get("/")
    async def overview(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
    ) -> Template:
        principal = console.principal
        # Independent reads, each in its own unit of work: side by side, not one after another.
        counts, queues, workers, recent = await asyncio.gather(
            services.status.counts(principal=principal),
            services.status.queues(principal=principal, window=RATE_WINDOW),
            services.workers.list(principal=principal),
            list_runs(
                services,
                options,
                principal,
                task_id=None,
                status=None,
                trigger=None,
                worker_id=None,
                created_after=None,
                created_before=None,
                limit=200,
                cursor=None,
            ),
        )
        return page(
            request,
            console,
            "overview.html",
            title="Overview",
            counts=counts,
            queues=queues,
            queue_chart=queue_depths(queues, now=services.clock.now()),
            now=services.clock.now(),
            online=sum(1 for w in workers if w.status is WorkerStatus.ONLINE),
            busy=sum(1 for w in workers if w.active_runs > 0),
            draining=sum(1 for w in workers if w.status is WorkerStatus.DRAINING),
            chart=runs_per_minute(recent.items, now=services.clock.now(), minutes=15),
            sampled=len(recent.items),
            lateness=slot_lateness(recent.items),
            lateness_chart=lateness_per_minute(recent.items, now=services.clock.now(), minutes=15),
            latest=recent.items[:10],
            names=await task_names(services, principal, [r.task_id for r in recent.items[:10]]),
        )

    @get("/tasks")
    async def tasks(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
        name: Query = None,
        task_state: StateQuery = None,
        queue: Query = None,
        cursor: Cursor = None,
    ) -> Template:
        if task_state not in ("", None, "enabled", "paused"):
            raise ValidationError("state must be enabled or paused", field="state")
        enabled = None if not task_state else task_state == "enabled"
        tasks = await services.tasks.list(
            principal=console.principal,
            enabled=enabled,
            queue=text(queue, field="queue", limit=100),
            name_prefix=text(name, field="name"),
            limit=PAGE,
            cursor=open_cursor(cursor, options),
        )
        return page(
            request,
            console,
            "tasks.html",
            title="Tasks",
            tasks=tasks.items,
            next_cursor=seal_cursor(tasks.next_cursor, options),
            latest=await services.runs.latest_statuses(
                [t.id for t in tasks.items], principal=console.principal, per_task=5
            ),
            filters={"name": name or "", "state": task_state or "", "queue": queue or ""},
            task_zone=task_zone,
        )

    @get("/tasks/{task_id:str}")
    async def task(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
        task_id: Id,
    ) -> Template:
        principal = console.principal
        task_id = object_id(task_id, kind="task", field="task_id")
        task = await services.tasks.get(task_id, principal=principal)
        preview = await services.tasks.schedule_preview(
            task_id, principal=principal, n=10, decisions=20
        )
        graph = await services.task_graph.dependencies(task_id, principal=principal)
        runs = await list_runs(
            services,
            options,
            principal,
            task_id=task_id,
            status=None,
            trigger=None,
            worker_id=None,
            created_after=None,
            created_before=None,
            limit=20,
            cursor=None,
        )
        template = None
        if task.template_id is not None:
            try:
                template = await services.templates.get(task.template_id, principal=principal)
            except NotFound:
                template = None
        return page(
            request,
            console,
            "task.html",
            title=task.name,
            task=task,
            task_template=template,
            preview=preview,
            deps=graph,
            graph=dependency_graph(task, graph.upstreams, graph.dependents),
            runs=runs.items,
            zone=task_zone(task),
        )

    @get("/runs")
    async def runs(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
        status: Query = None,
        task_id: Query = None,
        trigger: Query = None,
        worker_id: Query = None,
        queue: Query = None,
        created_after: Query = None,
        created_before: Query = None,
        cursor: Cursor = None,
    ) -> Template:
        wanted = choice(RunStatus, status, field="status")
        task = text(task_id, field="task_id")
        result = await list_runs(
            services,
            options,
            console.principal,
            task_id=object_id(task, kind="task", field="task_id") if task else None,
            status=[wanted] if wanted else None,
            trigger=choice(RunTrigger, trigger, field="trigger"),
            worker_id=text(worker_id, field="worker_id", limit=64),
            queue=queue_filter(queue),
            created_after=created_after or None,
            created_before=created_before or None,
            limit=PAGE,
            cursor=cursor,
        )
        return page(
            request,
            console,
            "runs.html",
            title="Runs",
            runs=result.items,
            next_cursor=result.next_cursor,
            names=await task_names(services, console.principal, [r.task_id for r in result.items]),
            filters={
                "status": status or "",
                "task_id": task_id or "",
                "trigger": trigger or "",
                "worker_id": worker_id or "",
                "queue": queue or "",
                "created_after": created_after or "",
                "created_before": created_before or "",
            },
            statuses=list(RunStatus),
            triggers=list(RunTrigger),
        )

    @get("/runs/{run_id:str}")
    async def run(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        run_id: Id,
    ) -> Template:
        principal = console.principal
        run = await services.runs.get(
            object_id(run_id, kind="run", field="run_id"), principal=principal
        )
        events = await services.runs.events(run.id, principal=principal)
        chain = [run]
        while chain[-1].retry_of is not None and len(chain) < MAX_CHAIN:
            try:
                chain.append(await services.runs.get(chain[-1].retry_of, principal=principal))
            except NotFound:
                break
        task = await services.tasks.get(run.task_id, principal=principal)
        return page(
            request,
            console,
            "run.html",
            title=f"Run of {task.name}",
            run=run,
            task=task,
            events=events,
            chain=list(reversed(chain)),
            duration=(run.finished_at - run.started_at)
            if run.finished_at and run.started_at
            else None,
        )

    @get("/queues")
    async def queues(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
    ) -> Template:
        stats = await services.status.queues(principal=console.principal, window=RATE_WINDOW)
        settings = await services.queues.all(principal=console.principal)
        workers = await services.workers.list(principal=console.principal)
        consumers = Counter(
            q for w in workers if w.status is not WorkerStatus.OFFLINE for q in w.queues
        )
        return page(
            request,
            console,
            "queues.html",
            title="Queues",
            queues=stats,
            consumers=consumers,
            paused={name for name, view in settings.items() if view.settings.paused},
            views=settings,
            now=services.clock.now(),
            window=RATE_WINDOW,
        )

    @get("/workers")
    async def workers(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
    ) -> Template:
        workers = await services.workers.list(principal=console.principal)
        workers.sort(key=lambda w: (w.status is WorkerStatus.OFFLINE, w.name, w.id))
        now = services.clock.now()
        return page(
            request,
            console,
            "workers.html",
            title="Workers",
            workers=workers[:500],
            silence={w.id: now - w.heartbeat_at for w in workers},
        )

    @get("/dead-letters")
    async def dead_letters(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
        cursor: Cursor = None,
    ) -> Template:
        result = await list_runs(
            services,
            options,
            console.principal,
            task_id=None,
            status=[RunStatus.DEAD_LETTERED],
            trigger=None,
            worker_id=None,
            created_after=None,
            created_before=None,
            limit=PAGE,
            cursor=cursor,
        )
        return page(
            request,
            console,
            "dead_letters.html",
            title="Dead letters",
            runs=result.items,
            next_cursor=result.next_cursor,
            names=await task_names(services, console.principal, [r.task_id for r in result.items]),
        )

    @get("/api-keys")
    async def api_keys(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
    ) -> Template:
        keys = await services.api_keys.list(
            principal=console.principal, owner_id=console.principal.subject_id
        )
        keys.sort(key=lambda k: k.created_at, reverse=True)
        return page(
            request,
            console,
            "api_keys.html",
            title="API keys",
            keys=keys,
            now=services.clock.now(),
            issued=None,
        )

    @get("/users")
    async def users(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
        cursor: Cursor = None,
    ) -> Template:
        result = await services.users.list(
            principal=console.principal, limit=PAGE, cursor=open_cursor(cursor, options)
        )
        return page(
            request,
            console,
            "users.html",
            title="Users",
            users=result.items,
            next_cursor=seal_cursor(result.next_cursor, options),
        )
