"""Append-only records: the audit trail of runs and the dispatcher's decisions about slots."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

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
