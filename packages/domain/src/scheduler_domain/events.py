"""Append-only records: the audit trail of runs and the dispatcher's decisions about slots."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from scheduler_domain.errors import ValidationError
from scheduler_domain.ids import new_id
from scheduler_domain.status import RunStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEvent:
    """One transition of one run: written in the same transaction as the change it records."""

    run_id: str
    task_id: str
    from_status: RunStatus | None
    to_status: RunStatus
    at: datetime
    actor: str
    detail: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)


class SlotOutcome(StrEnum):
    FIRED = "fired"
    SKIPPED = "skipped"


class SkipReason(StrEnum):
    """Why a slot did not produce a run; the API shows it, metrics count it."""

    FORBID = "forbid"
    MISFIRE = "misfire"
    PAUSED = "paused"
    RATE_LIMITED = "rate_limited"
    DEPENDENCY_FAILED = "dependency_failed"
    BUFFER_FULL = "buffer_full"
    DST_GAP = "dst_gap"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotDecision:
    """What the dispatcher decided for one slot of one task, so that "why didn't it fire?" has
    an answer."""

    task_id: str
    slot: datetime
    outcome: SlotOutcome
    at: datetime
    reason: SkipReason | None = None
    run_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)


# -- the event log ------------------------------------------------------------------------------

#: What a task change is called in the event log (a run transition is ``run.<to status>``).
TASK_CREATED = "task.created"
TASK_UPDATED = "task.updated"
TASK_PAUSED = "task.paused"
TASK_RESUMED = "task.resumed"
TASK_DELETED = "task.deleted"
TASK_SLOT_SKIPPED = "task.slot_skipped"

_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
MAX_KIND_LENGTH = 64
MAX_SUBJECT_LENGTH = 200


def run_event_kind(to_status: RunStatus | str) -> str:
    return f"run.{RunStatus(to_status).value}"


def check_kind(kind: str) -> str:
    """A kind is dotted lower-case words, ``<area>.<what happened>``: it is also a routing key."""
    if not isinstance(kind, str) or len(kind) > MAX_KIND_LENGTH or not _KIND.fullmatch(kind):
        raise ValidationError(
            f"event kind must be dotted lower-case words (like 'queue.paused'), "
            f"at most {MAX_KIND_LENGTH} characters",
            field="kind",
        )
    return kind


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """An entry of the event log that is not a run transition: a task change, a skipped slot,
    or anything else worth telling consumers (``queue.paused``). Written in the transaction of
    the change it records, like a :class:`RunEvent`.

    ``team_id`` (the team of the task it is about, kept once the task is gone) and ``owner_id``
    (a user's own record, such as a webhook's) decide who may read it besides admins and
    operators (None: only they, unless
    ``task_id`` names a task whose owner may); ``subject`` names what it is about when that is
    not a task (``queue:default``)."""

    kind: str
    at: datetime
    actor: str
    task_id: str | None = None
    owner_id: str | None = None
    team_id: str | None = None
    subject: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        check_kind(self.kind)
        if self.subject is not None and len(self.subject) > MAX_SUBJECT_LENGTH:
            raise ValidationError(
                f"subject is longer than {MAX_SUBJECT_LENGTH} characters", field="subject"
            )
        if self.at.utcoffset() is None:
            raise ValidationError("an event's time must carry a time zone", field="at")


@dataclass(frozen=True, slots=True, order=True)
class EventCursor:
    """A position in the event log: the writing transaction's id (PostgreSQL; 0 on SQLite),
    then the row's sequence number. Written ``<txid>-<seq>``; events are served in this order
    and a reader resumes strictly after the cursor it last saw."""

    txid: int
    seq: int

    def __str__(self) -> str:
        return f"{self.txid}-{self.seq}"

    @classmethod
    def parse(cls, text: str, *, field_name: str = "after") -> EventCursor:
        txid, sep, seq = text.strip().partition("-")
        if not sep or not txid.isdigit() or not seq.isdigit() or len(text) > 50:
            raise ValidationError(
                "an event cursor looks like '<number>-<number>' (an event's id in the stream)",
                field=field_name,
            )
        return cls(int(txid), int(seq))


#: Before every event.
LOG_START = EventCursor(0, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggedEvent:
    """One entry of the event log as read back: a run transition or an :class:`EventRecord`."""

    cursor: EventCursor
    id: str
    kind: str
    at: datetime
    actor: str
    task_id: str | None
    run_id: str | None
    subject: str | None
    from_status: RunStatus | None
    to_status: RunStatus | None
    detail: dict[str, Any]
