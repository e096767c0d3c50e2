"""``/ui/events``: the console's live feed, the API's event log over Server-Sent Events with
the session cookie (an ``EventSource`` cannot send an ``Authorization`` header). Each event
only says that something the page shows may have changed: the page fetches itself again, in
batches, so the tab's work does not grow with the event rate."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from scheduler_api.console.context import Console, session_cookies
from scheduler_api.dependencies import Options, Services
from scheduler_api.params import object_id
from scheduler_application.errors import ApplicationError
from scheduler_application.events.stream import Heartbeat, follow
from scheduler_domain.events import EventCursor, LoggedEvent

log = logging.getLogger("scheduler.api.console")
RECONNECT_MS = 2000
IdQuery = Annotated[str | None, QueryParameter(max_length=64)]


class LiveController(Controller):
    @get("/events", media_type="text/event-stream")
    async def events(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
        task_id: IdQuery = None,
        run_id: IdQuery = None,
        last_event_id: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=50, required=False)
        ] = None,
    ) -> ServerSentEvent:
        principal = console.principal
        task = object_id(task_id, kind="task", field="task_id") if task_id else None
        run = object_id(run_id, kind="run", field="run_id") if run_id else None
        start = (
            EventCursor.parse(last_event_id, field_name="Last-Event-ID")
            if last_event_id
            else await services.events.head(principal=principal)
        )
        # Read before answering: someone else's task or run is a 404, not a broken stream.
        first = await services.events.read(
            principal=principal, after=start, limit=options.event_page, task_id=task, run_id=run
        )
        stream = follow(
            services.events,
            services.event_watcher,
            principal=principal,
            after=start,
            heartbeat_seconds=options.event_heartbeat_seconds,
            page=options.event_page,
            first=first,
            max_seconds=options.event_stream_seconds,
            task_id=task,
            run_id=run,
            reauthenticate=partial(
                services.auth.authenticate,
                authorization=f"Bearer {console.cookie.access_token}",
            ),
        )
        return ServerSentEvent(
            _changes(stream),
            retry_duration=RECONNECT_MS,
            cookies=session_cookies(request, console),
        )


async def _changes(
    stream: AsyncIterator[LoggedEvent | Heartbeat],
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for item in stream:
            if isinstance(item, Heartbeat):
                yield ServerSentEventMessage(comment="heartbeat", data=None)
                continue
            yield ServerSentEventMessage(id=str(item.cursor), event="change", data=item.kind)
    except ApplicationError as error:  # an outage: the browser reconnects after its last event
        log.warning("console event stream ended: %s", error)
