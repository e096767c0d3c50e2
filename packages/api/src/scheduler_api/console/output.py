"""``/ui/runs/{id}/output``: a running run's output as Server-Sent Events, for its page.

Why a stream of its own rather than an event on the log per chunk: output is the chattiest
thing a run does, and the log is read by every watcher, webhook and broker topic; a chunk is
only of interest to the pages showing that run. So the worker appends complete lines to the
run's stored output (``ExecutionService.report_output``, twice a second) and this stream, one
per open run page, reads the run by primary key every ``POLL_SECONDS`` — authorized like the
run page itself (someone else's run is a 404) — and sends what was added after the offset the
page already has. Each message names its offset (``id:``), so a reconnecting ``EventSource``
resumes where it stopped. When the stored text no longer extends what was sent (the outcome
replaced it: redacted, or cut with a marker) a ``reset`` starts over from 0. The stream ends
with ``end`` once the run is final, or after ``api.event_stream_seconds``. Sizes are bounded:
at most ``CHUNK`` characters per message, and the stored output itself is capped."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import HeaderParameter, PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from scheduler_api.console.context import Console, session_cookies
from scheduler_api.dependencies import Options, Services
from scheduler_api.params import object_id
from scheduler_application.accounts.access import Principal
from scheduler_application.errors import ApplicationError
from scheduler_application.runs.service import RunService

POLL_SECONDS = 0.5
CHUNK = 16_384
HEARTBEAT_SECONDS = 15.0
RECONNECT_MS = 2000


class OutputController(Controller):
    @get("/runs/{run_id:str}/output", media_type="text/event-stream")
    async def output(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        options: Options,
        run_id: Annotated[str, PathParameter(max_length=64)],
        offset: Annotated[int, QueryParameter(ge=0, le=10_000_000)] = 0,
        last_event_id: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=20, required=False)
        ] = None,
    ) -> ServerSentEvent:
        run = await services.runs.get(
            object_id(run_id, kind="run", field="run_id"), principal=console.principal
        )
        if last_event_id is not None and last_event_id.isdigit():
            offset = int(last_event_id)
        stream = follow_output(
            services.runs,
            console.principal,
            run.id,
            offset=offset,
            max_seconds=options.event_stream_seconds,
        )
        return ServerSentEvent(
            stream, retry_duration=RECONNECT_MS, cookies=session_cookies(request, console)
        )


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()


def _message(event: str, offset: int, **data: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, id=str(offset), data=json.dumps(data))


async def follow_output(
    runs: RunService,
    principal: Principal,
    run_id: str,
    *,
    offset: int,
    max_seconds: float,
    poll_seconds: float = POLL_SECONDS,
) -> AsyncIterator[ServerSentEventMessage]:
    """What was added to the run's output after ``offset`` (characters), until it is final."""
    deadline = time.monotonic() + max_seconds
    quiet_since = time.monotonic()
    sent: bytes | None = None  # digest of the text up to ``offset``, once read
    try:
        while True:
            run = await runs.get(run_id, principal=principal)
            text = run.output or ""
            if sent is None:
                offset = min(offset, len(text))
                sent = _digest(text[:offset])
            elif len(text) < offset or _digest(text[:offset]) != sent:
                offset, sent = 0, _digest("")
                yield _message("reset", 0, at=0)
            if len(text) > offset:
                while offset < len(text):
                    piece = text[offset : offset + CHUNK]
                    yield _message(
                        "output",
                        offset + len(piece),
                        at=offset,
                        next=offset + len(piece),
                        text=piece,
                    )
                    offset += len(piece)
                sent = _digest(text[:offset])
                quiet_since = time.monotonic()
            if run.status.is_final:
                yield _message("end", offset, status=run.status.value)
                return
            if time.monotonic() >= deadline:
                return
            if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield ServerSentEventMessage(comment="heartbeat", data=None)
            await asyncio.sleep(poll_seconds)
    except ApplicationError:  # gone, or an outage: the page keeps what it has
        return
