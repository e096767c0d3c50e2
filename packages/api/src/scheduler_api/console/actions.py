"""The console's actions (POST, from plain forms): each calls the same use case as the REST
API, which refuses what the principal's role may not do (403) and hides what it may not see
(404). The CSRF token and origin were checked before the handler runs (the router's hook)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from scheduler_api.console.context import Console, page, redirect, text
from scheduler_api.dependencies import Services
from scheduler_api.params import object_id, query_instant
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError
from scheduler_domain.queue_settings import validate_queue_name

Id = Annotated[str, PathParameter(max_length=64)]


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


class ActionsController(Controller):
    @post("/tasks/{task_id:str}/trigger")
    async def trigger(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        task_id: Id,
    ) -> Redirect:
        form = await _form(request)
        # The REST trigger's way: shared transactions with the triggers arriving meanwhile.
        triggered = await services.triggers.trigger(
            object_id(task_id, kind="task", field="task_id"),
            principal=console.principal,
            idempotency_key=text(form.get("idempotency_key"), field="idempotency_key"),
            logical_time=query_instant(
                text(form.get("logical_time"), field="logical_time", limit=64),
                field="logical_time",
            ),
        )
        return redirect(request, console, f"/ui/runs/{triggered.run.id}")

    @post("/tasks/{task_id:str}/pause")
    async def pause(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        task_id: Id,
    ) -> Redirect:
        task = await services.tasks.pause(
            object_id(task_id, kind="task", field="task_id"), principal=console.principal
        )
        return redirect(request, console, f"/ui/tasks/{task.id}")

    @post("/tasks/{task_id:str}/resume")
    async def resume(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        task_id: Id,
    ) -> Redirect:
        task = await services.tasks.resume(
            object_id(task_id, kind="task", field="task_id"), principal=console.principal
        )
        return redirect(request, console, f"/ui/tasks/{task.id}")

    @post("/runs/{run_id:str}/cancel")
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        run_id: Id,
    ) -> Redirect:
        run = await services.runs.cancel(
            object_id(run_id, kind="run", field="run_id"),
            principal=console.principal,
            reason="cancelled from the console",
        )
        return redirect(request, console, f"/ui/runs/{run.id}")

    @post("/runs/{run_id:str}/retry")
    async def retry(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        run_id: Id,
    ) -> Redirect:
        run = await services.runs.retry(
            object_id(run_id, kind="run", field="run_id"), principal=console.principal
        )
        return redirect(request, console, f"/ui/runs/{run.id}")

    @post("/workers/{worker_id:str}/drain")
    async def drain(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        worker_id: Id,
    ) -> Redirect:
        await services.workers.drain(
            object_id(worker_id, kind="worker", field="worker_id"), principal=console.principal
        )
        return redirect(request, console, "/ui/workers")

    @post("/workers/{worker_id:str}/undrain")
    async def undrain(
        self, request: Request[Any, Any, Any], console: Console, services: Services, worker_id: Id
    ) -> Redirect:
        await services.workers.undrain(
            object_id(worker_id, kind="worker", field="worker_id"), principal=console.principal
        )
        return redirect(request, console, "/ui/workers")

    @post("/queues/{name:str}/pause")
    async def pause_queue(
        self, request: Request[Any, Any, Any], console: Console, services: Services, name: Id
    ) -> Redirect:
        await services.queues.pause(
            validate_queue_name(name, field="name"), principal=console.principal
        )
        return redirect(request, console, "/ui/queues")

    @post("/queues/{name:str}/resume")
    async def resume_queue(
        self, request: Request[Any, Any, Any], console: Console, services: Services, name: Id
    ) -> Redirect:
        await services.queues.resume(
            validate_queue_name(name, field="name"), principal=console.principal
        )
        return redirect(request, console, "/ui/queues")

    @post("/api-keys")
    async def issue_key(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
    ) -> Template:
        form = await _form(request)
        name = text(form.get("name"), field="name")
        if name is None:
            raise ValidationError("name is required", field="name")
        role_text = text(form.get("role"), field="role", limit=20)
        try:
            role = Role(role_text) if role_text else None
        except ValueError:
            raise ValidationError("role is not a role", field="role") from None
        expires = query_instant(
            text(form.get("expires_at"), field="expires_at", limit=64), field="expires_at"
        )
        issued = await services.api_keys.issue(
            principal=console.principal, name=name, role=role, expires_at=expires
        )
        keys = await services.api_keys.list(
            principal=console.principal, owner_id=console.principal.subject_id
        )
        keys.sort(key=lambda k: k.created_at, reverse=True)
        # The secret is shown once, on this answer (not stored, not cached: no-store).
        return page(
            request,
            console,
            "api_keys.html",
            title="API keys",
            keys=keys,
            now=services.clock.now(),
            issued=issued,
            status_code=201,
        )

    @post("/api-keys/{key_id:str}/revoke")
    async def revoke_key(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        key_id: Id,
    ) -> Redirect:
        await services.api_keys.revoke(
            object_id(key_id, kind="api key", field="key_id"), principal=console.principal
        )
        return redirect(request, console, "/ui/api-keys")
