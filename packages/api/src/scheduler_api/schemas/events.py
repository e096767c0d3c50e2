"""The event log's entries as the API shows them (SSE ``data`` and the JSON page)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from scheduler_domain.events import LoggedEvent
from scheduler_domain.status import RunStatus


class EventOut(msgspec.Struct, kw_only=True):
    #: The position in the log (``<txid>-<seq>``): the SSE ``id``, and what ``after`` and
    #: ``Last-Event-ID`` take to resume after this event.
    cursor: str
    #: The event's own id (a UUID), stable across re-reads: consumers deduplicate on it.
    id: str
    #: ``run.<status>`` for a run transition; ``task.created|updated|paused|resumed|deleted``,
    #: ``task.slot_skipped``, or another recorded kind (``queue.paused``).
    kind: str
    at: datetime
    actor: str
    task_id: str | None
    run_id: str | None
    subject: str | None
    from_status: RunStatus | None
    to_status: RunStatus | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: LoggedEvent) -> EventOut:
        return cls(
            cursor=str(event.cursor),
            id=event.id,
            kind=event.kind,
            at=event.at,
            actor=event.actor,
            task_id=event.task_id,
            run_id=event.run_id,
            subject=event.subject,
            from_status=event.from_status,
            to_status=event.to_status,
            detail=dict(event.detail),
        )


class EventPage(msgspec.Struct, kw_only=True):
    items: list[EventOut]
    #: Pass as ``after`` to read on; the same cursor when nothing new came (poll again).
    next_cursor: str
