"""``/api/v1/tasks``: define, inspect, change, pause, resume, trigger and delete tasks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, MediaType, Request, Response, delete, get, patch, post
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.datastructures import Cookie
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import (
    Body,
    FromQuery,
    HeaderParameter,
    JSONBody,
    PathParameter,
    QueryParameter,
)
from litestar.response.base import ASGIResponse
from litestar.status_codes import HTTP_200_OK
from litestar.types import TypeEncodersMap

from scheduler_api.auth import WORKERS_REFUSED, provide_principal
from scheduler_api.controllers.runs_listing import list_runs
from scheduler_api.dependencies import (
    CurrentPrincipal,
    Options,
    Services,
    services_of,
)
from scheduler_api.openapi import problems, task_body_schema
from scheduler_api.params import (
    LIMIT_DESCRIPTION,
    Cursor,
    InstantQuery,
    object_id,
    open_cursor,
    page_size,
    query_instant,
    seal_cursor,
)
from scheduler_api.schemas.runs import RunOut, RunPage
from scheduler_api.schemas.tasks import (
    TASK_EXAMPLE,
    ApplyOut,
    DependenciesOut,
    FieldChangeOut,
    SchedulePreviewOut,
    TaskChangeOut,
    TaskOut,
    TaskPage,
    TasksFileIn,
    TasksFileOut,
    TriggerIn,
    task_etag,
)
from scheduler_application.tasks.apply import ACTIONS, PruneScope
from scheduler_domain.errors import ValidationError
from scheduler_domain.run import RunTrigger
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task

TaskBody = Annotated[
    dict[str, Any],
    Body(
        title="Task",
        description="A task definition; see TaskSpec in the API docs",
        schema_extra=task_body_schema(patch=False),
        examples=[Example(summary="A nightly shell task", value=TASK_EXAMPLE)],
    ),
]
TaskPatch = Annotated[
    dict[str, Any],
    Body(
        title="TaskPatch",
        description="Any subset of the task's fields; retry and misfire merge key by key",
        schema_extra=task_body_schema(patch=True),
        examples=[
            Example(summary="Change the schedule", value={"schedule": {"cron": "*/5 * * * *"}})
        ],
    ),
]
TaskId = Annotated[str, PathParameter(description="Task id", max_length=64)]


def _task(task: Task, status_code: int = 200) -> Response[TaskOut]:
    headers = {"ETag": task_etag(task.version)}
    if status_code == 201:
        headers["Location"] = f"/api/v1/tasks/{task.id}"
    return Response(TaskOut.of(task), status_code=status_code, headers=headers)


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 9:
        raise ValidationError('If-Match must be the task\'s version, e.g. "3"', field="If-Match")
    return int(text)


def _id(task_id: str) -> str:
    return object_id(task_id, kind="task", field="task_id")


class _Shown(Response[bytes]):
    """A cached task's answer to ``GET /tasks/{id}``: its ``TaskOut`` as JSON with its ETag,
    and the ASGI response that sends them, both built once per cache entry (not per request).

    Litestar turns a handler's ``Response`` into an ASGI response for every request, merging
    in what the route's layers add (headers, cookies, a background task). This route's layers
    add nothing, and then the answer is the one built here, byte for byte what Litestar would
    build (``tests/unit/api/test_api_task_answer.py``); should a layer ever add something,
    Litestar's own path builds it as before. It is shared by the requests that read
    the task until the task changes: nothing changes it once built (no hook of this API
    touches a response, and an ASGI response sends what it holds).
    """

    __slots__ = ("_asgi",)

    def __init__(self, body: bytes, etag: str) -> None:
        super().__init__(body, headers={"ETag": etag}, media_type=MediaType.JSON)
        self._asgi = super().to_asgi_response(None, cast("Request[Any, Any, Any]", None))

    def to_asgi_response(
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        if (
            background is None
            and not cookies
            and encoded_headers is None
            and not headers
            and not is_head_response
            and status_code in (None, HTTP_200_OK)
        ):
            return self._asgi
        return super().to_asgi_response(
            app,
            request,
            background=background,
            cookies=cookies,
            encoded_headers=encoded_headers,
            headers=headers,
            is_head_response=is_head_response,
            media_type=media_type,
            status_code=status_code,
            type_encoders=type_encoders,
        )


def _shown(task: Task) -> _Shown:
    out = TaskOut.of(task)
    return _Shown(msgspec.json.encode(out), task_etag(out.version))


class TaskController(Controller):
    path = "/tasks"
    tags = ("tasks",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post("/", summary="Create a task", responses=problems(409))
    async def create(
        self, data: TaskBody, services: Services, principal: CurrentPrincipal
    ) -> Response[TaskOut]:
        task = await services.tasks.create(data, principal=principal)
        return _task(task, 201)

    @post(
        "/apply",
        status_code=200,
        summary="Make your tasks what a tasks file says",
        description=(
            "Creates the file's tasks you have none of by name, updates those that differ (every "
            "field: one the file leaves out returns to its default), and with `prune=true` "
            "deletes your tasks the file does not name — only those within the scope given by "
            "`prune_prefix` (name prefix) and/or `prune_label`. The whole file is checked "
            "first; `dry_run=true` answers the same plan and changes nothing. See "
            "docs/tasks-as-code.md."
        ),
        responses=problems(409),
    )
    async def apply(
        self,
        data: JSONBody[TasksFileIn],
        services: Services,
        principal: CurrentPrincipal,
        dry_run: FromQuery[bool] = False,
        prune: FromQuery[bool] = False,
        prune_prefix: Annotated[str | None, QueryParameter(max_length=200)] = None,
        prune_label: Annotated[str | None, QueryParameter(max_length=100)] = None,
    ) -> ApplyOut:
        result = await services.task_apply.apply(
            {
                "version": data.version,
                "tasks": data.tasks,
                **({"templates": data.templates} if data.templates is not None else {}),
                **({"limits": data.limits} if data.limits is not None else {}),
                **({"subscriptions": data.subscriptions} if data.subscriptions is not None else {}),
                **({"team": data.team} if data.team is not None else {}),
            },
            principal=principal,
            prune=prune,
            scope=PruneScope(name_prefix=prune_prefix, label=prune_label),
            dry_run=dry_run,
        )
        return ApplyOut(
            dry_run=result.dry_run,
            changes=[
                TaskChangeOut(
                    name=c.name,
                    action=c.action,
                    task_id=c.task_id,
                    fields={k: FieldChangeOut(before=b, after=a) for k, (b, a) in c.fields.items()},
                    kind=c.kind,
                )
                for c in result.changes
            ],
            summary={action: result.count(action) for action in ACTIONS},
        )

    @get(
        "/export",
        summary="Your tasks as a tasks file",
        description="The form `apply` takes; applying it unchanged changes nothing.",
        responses=problems(),
    )
    async def export(
        self,
        services: Services,
        principal: CurrentPrincipal,
        name_prefix: Annotated[str | None, QueryParameter(max_length=200)] = None,
        label: Annotated[str | None, QueryParameter(max_length=100)] = None,
    ) -> TasksFileOut:
        document = await services.task_apply.export_file(
            principal=principal, scope=PruneScope(name_prefix=name_prefix, label=label)
        )
        return TasksFileOut(
            version=1, tasks=document["tasks"], subscriptions=document.get("subscriptions")
        )

    @get("/", summary="List tasks", responses=problems())
    async def list_tasks(
        self,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        owner_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        team_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        enabled: FromQuery[bool | None] = None,
        queue: Annotated[str | None, QueryParameter(max_length=100)] = None,
        name_prefix: Annotated[str | None, QueryParameter(max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 50,
        cursor: Cursor = None,
    ) -> TaskPage:
        size = page_size(limit, options)
        page = await services.tasks.list(
            principal=principal,
            owner_id=owner_id,
            team_id=team_id,
            enabled=enabled,
            queue=queue,
            name_prefix=name_prefix,
            limit=size,
            cursor=open_cursor(cursor, options),
        )
        return TaskPage(
            items=[TaskOut.of(t) for t in page.items],
            next_cursor=seal_cursor(page.next_cursor, options),
            limit=size,
        )

    @get("/{task_id:str}", summary="Get a task", responses=problems(404))
    async def get_task(self, task_id: TaskId, request: Request[Any, Any, Any]) -> Response[TaskOut]:
        # Rendered (to its JSON) once per cached task, not per request; the caller's right
        # to see it is checked every time.
        shown = await services_of(request).tasks.show(
            _id(task_id), principal=provide_principal(request), render=_shown
        )
        # The body is a TaskOut's JSON (what the document declares), encoded once.
        return cast("Response[TaskOut]", shown)

    @patch("/{task_id:str}", summary="Change a task", responses=problems(404, 409))
    async def update(
        self,
        task_id: TaskId,
        data: TaskPatch,
        services: Services,
        principal: CurrentPrincipal,
        if_match: Annotated[
            str | None,
            HeaderParameter(
                name="If-Match",
                pattern=r'^(W/)?"?[0-9]{1,9}"?$',
                description='Refuse the edit unless at this version ("3")',
            ),
        ] = None,
    ) -> Response[TaskOut]:
        task = await services.tasks.update(
            _id(task_id), data, principal=principal, expected_version=_version(if_match)
        )
        return _task(task)

    @delete("/{task_id:str}", summary="Delete a task and its runs", responses=problems(404, 409))
    async def remove(
        self, task_id: TaskId, services: Services, principal: CurrentPrincipal
    ) -> None:
        await services.tasks.delete(_id(task_id), principal=principal)

    @post("/{task_id:str}/pause", status_code=200, summary="Pause", responses=problems(404, 409))
    async def pause(
        self, task_id: TaskId, services: Services, principal: CurrentPrincipal
    ) -> Response[TaskOut]:
        return _task(await services.tasks.pause(_id(task_id), principal=principal))

    @post("/{task_id:str}/resume", status_code=200, summary="Resume", responses=problems(404, 409))
    async def resume(
        self, task_id: TaskId, services: Services, principal: CurrentPrincipal
    ) -> Response[TaskOut]:
        return _task(await services.tasks.resume(_id(task_id), principal=principal))

    @post(
        "/{task_id:str}/trigger",
        summary="Run the task now",
        description=(
            "Creates a manual run (201). With an Idempotency-Key, the same key always answers "
            "with the same run: 200 and `Idempotent-Replayed: true` when it already existed. "
            'An optional body `{"logical_time": "2030-01-01T02:00:00+01:00"}` names the '
            "logical time the run is for (now by default; not in the future; 409 when the task "
            "has a run for it), so a hand-started upstream can complete its dependents' fan-in. "
            '`{"params": {...}}` are run parameters, merged over the task\'s and validated '
            "against its template's schema (or by its executor): 422 names the field "
            "(`params.city`); the run shows them (`run_params`, `params`)."
        ),
        responses={
            **problems(404, 409),
            200: ResponseSpec(
                data_container=RunOut,
                description="The run this key created before",
                generate_examples=False,
            ),
        },
    )
    async def trigger(
        self,
        task_id: TaskId,
        request: Request[Any, Any, Any],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", max_length=200)
        ] = None,
        data: JSONBody[TriggerIn | None] = None,
    ) -> Response[RunOut]:
        logical_time = query_instant(
            data.logical_time if data is not None else None, field="logical_time"
        )
        triggered = await services_of(request).triggers.trigger(
            _id(task_id),
            principal=provide_principal(request),
            idempotency_key=idempotency_key,
            logical_time=logical_time,
            params=data.params if data is not None else None,
        )
        run, replayed = triggered.run, triggered.replayed
        return Response(
            RunOut.of(run),
            status_code=200 if replayed else 201,
            headers={
                "Location": f"/api/v1/runs/{run.id}",
                "Idempotent-Replayed": "true" if replayed else "false",
            },
        )

    @get("/{task_id:str}/runs", summary="Runs of a task, newest first", responses=problems(404))
    async def runs(
        self,
        task_id: TaskId,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        status: FromQuery[list[RunStatus] | None] = None,
        trigger: FromQuery[RunTrigger | None] = None,
        created_after: InstantQuery = None,
        created_before: InstantQuery = None,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 50,
        cursor: Cursor = None,
    ) -> RunPage:
        return await list_runs(
            services,
            options,
            principal,
            task_id=_id(task_id),
            status=status,
            trigger=trigger,
            worker_id=None,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )

    @get(
        "/{task_id:str}/schedule",
        summary="Next fire times and recent decisions",
        description=(
            "The next `n` fire times in the task's time zone, and the dispatcher's recent "
            "decisions about slots (fired, or skipped with a reason)."
        ),
        responses=problems(404),
    )
    async def schedule(
        self,
        task_id: TaskId,
        services: Services,
        principal: CurrentPrincipal,
        n: Annotated[int, QueryParameter(ge=0, le=100)] = 5,
        decisions: Annotated[int, QueryParameter(ge=0, le=100)] = 20,
    ) -> SchedulePreviewOut:
        preview = await services.tasks.schedule_preview(
            _id(task_id), principal=principal, n=n, decisions=decisions
        )
        return SchedulePreviewOut.of(preview)

    @get(
        "/{task_id:str}/dependencies",
        summary="Upstreams and dependents",
        responses=problems(404),
    )
    async def task_dependencies(
        self, task_id: TaskId, services: Services, principal: CurrentPrincipal
    ) -> DependenciesOut:
        graph = await services.task_graph.dependencies(_id(task_id), principal=principal)
        return DependenciesOut.of(graph)
