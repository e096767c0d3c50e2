"""``/api/v1/events``: the event log as Server-Sent Events; ``/api/v1/events/page``: the same
as JSON pages for polling clients.

The stream starts after ``Last-Event-ID`` (what a reconnecting EventSource sends), else after
``?after=``, else at the present: only what happens from now on (``after=0-0`` replays the
whole log still kept). Every event's SSE ``id`` is its cursor. A comment line is sent after
``events.heartbeat_seconds`` without an event. Filters and the object-level rule are checked
before the answer starts, so a bad filter is a 4xx, not a broken stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery, HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Options, Services
from scheduler_api.openapi import problems
from scheduler_api.params import LIMIT_DESCRIPTION, object_id, page_size
from scheduler_api.schemas.events import EventOut, EventPage
from scheduler_application.errors import ApplicationError
from scheduler_application.events.log import EventFilters
from scheduler_application.events.stream import Heartbeat, follow
from scheduler_domain.events import LOG_START, EventCursor, LoggedEvent
from scheduler_domain.status import RunStatus

log = logging.getLogger("scheduler.api.events")

#: How long an EventSource waits before it reconnects after the stream ended (milliseconds).
RECONNECT_MS = 2000
_ENCODER = msgspec.json.Encoder()


TaskIdQuery = Annotated[str | None, QueryParameter(max_length=64)]
RunIdQuery = Annotated[str | None, QueryParameter(max_length=64)]
KindsQuery = Annotated[
    list[str] | None,
    QueryParameter(name="type", description="Event kinds (run.failed, task.paused…)"),
]
AfterQuery = Annotated[
    str | None,
    QueryParameter(max_length=50, description="Cursor to start after (<txid>-<seq>)"),
]
_WHAT = (
    "Run transitions (kind run.<status>) and task changes (task.created, task.updated,"
    " task.paused, task.resumed, task.deleted, task.slot_skipped) in one order. A user sees"
    " the events of their own tasks; admins and operators see all. Nothing is skipped or"
    " repeated after a cursor."
)


def _filters(
    task_id: str | None,
    run_id: str | None,
    status: list[RunStatus] | None,
    kind: list[str] | None,
) -> EventFilters:
    return EventFilters(
        task_id=object_id(task_id, kind="task", field="task_id") if task_id else None,
        run_id=object_id(run_id, kind="run", field="run_id") if run_id else None,
        statuses=tuple(status or ()),
        kinds=tuple(kind or ()),
    )


class EventController(Controller):
    path = "/events"
    tags = ("events",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @get(
        "/",
        media_type="text/event-stream",
        summary="Follow the event log as Server-Sent Events",
        description=(
            f"{_WHAT} Starts after Last-Event-ID, else after `after`, else at the present;"
            " every event's SSE id is its cursor. A `: heartbeat` comment after"
            " events.heartbeat_seconds without an event; the stream ends after the access"
            " token's lifetime (reconnect with Last-Event-ID)."
        ),
        responses=problems(404),
    )
    async def stream(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        task_id: TaskIdQuery = None,
        run_id: RunIdQuery = None,
        status: FromQuery[list[RunStatus] | None] = None,
        kind: KindsQuery = None,
        after: AfterQuery = None,
        last_event_id: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=50, required=False)
        ] = None,
    ) -> ServerSentEvent:
        start: EventCursor | None = None
        if last_event_id:
            start = EventCursor.parse(last_event_id, field_name="Last-Event-ID")
        elif after is not None:
            start = EventCursor.parse(after, field_name="after")
        filters = _filters(task_id, run_id, status, kind)
        if start is None:
            start = await services.events.head(principal=principal)
        # Read before answering: a bad filter or someone else's task is a 4xx, not a broken
        # stream.
        first = await services.events.read(
            principal=principal, after=start, limit=options.event_page, **filters.as_query()
        )
        events = follow(
            services.events,
            services.event_watcher,
            principal=principal,
            after=start,
            heartbeat_seconds=options.event_heartbeat_seconds,
            page=options.event_page,
            first=first,
            max_seconds=options.event_stream_seconds,
            reauthenticate=partial(
                services.auth.authenticate,
                authorization=request.headers.get("authorization"),
                api_key=request.headers.get("x-api-key"),
            ),
            **filters.as_query(),
        )
        return ServerSentEvent(_messages(events), retry_duration=RECONNECT_MS)

    @get(
        "/page",
        summary="One page of the event log, for polling clients",
        description=(
            f"{_WHAT} Keyset paging: pass next_cursor as `after` to read on (the same cursor"
            " comes back while nothing new has come); without `after`, from the oldest kept."
        ),
        responses=problems(404),
    )
    async def page(
        self,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        task_id: TaskIdQuery = None,
        run_id: RunIdQuery = None,
        status: FromQuery[list[RunStatus] | None] = None,
        kind: KindsQuery = None,
        after: AfterQuery = None,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 100,
    ) -> EventPage:
        cursor = LOG_START if after is None else EventCursor.parse(after, field_name="after")
        page = await services.events.read(
            principal=principal,
            after=cursor,
            limit=page_size(limit, options),
            **_filters(task_id, run_id, status, kind).as_query(),
        )
        items = [EventOut.of(e) for e in page]
        return EventPage(items=items, next_cursor=items[-1].cursor if items else str(cursor))


async def _messages(
    stream: AsyncIterator[LoggedEvent | Heartbeat],
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for item in stream:
            if isinstance(item, Heartbeat):
                yield ServerSentEventMessage(comment="heartbeat", data=None)
                continue
            yield ServerSentEventMessage(
                id=str(item.cursor),
                event=item.kind,
                data=_ENCODER.encode(EventOut.of(item)).decode(),
            )
    except ApplicationError as error:  # an outage: the client reconnects with Last-Event-ID
        log.warning("event stream ended: %s", error)
