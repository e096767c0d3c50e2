"""Which overdue slots still run after the dispatcher was down, busy or paused.

The dispatcher hands over every slot that came due since it last looked; the policy decides which of
them fire and which are recorded as missed (reason ``misfire``), so that nothing is silently lost
and a long outage never turns into a burst of thousands of runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from scheduler_domain.clock import ensure_utc
from scheduler_domain.errors import ValidationError


class MisfireKind(StrEnum):
    SKIP = "skip"  # late slots never run
    RUN_ONCE = "run_once"  # late slots collapse into one run, unless an on-time slot runs anyway
    CATCH_UP = "catch_up"  # replay late slots, at most ``catch_up_cap`` of the newest


@dataclass(frozen=True, slots=True)
class MisfirePolicy:
    kind: MisfireKind = MisfireKind.RUN_ONCE
    catch_up_cap: int = 10
    grace: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", MisfireKind(self.kind))
        except ValueError:
            allowed = ", ".join(kind.value for kind in MisfireKind)
            raise ValidationError(
                f"{self.kind!r} is not one of: {allowed}", field="misfire.kind"
            ) from None
        cap = self.catch_up_cap
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValidationError("catch_up_cap must be at least 1", field="misfire.catch_up_cap")
        if not isinstance(self.grace, timedelta) or self.grace < timedelta(0):
            raise ValidationError("grace must not be negative", field="misfire.grace")


@dataclass(frozen=True, slots=True)
class SlotSelection:
    """The due slots split in two, each in ascending order: run them, or record them as missed."""

    fire: tuple[datetime, ...]
    missed: tuple[datetime, ...]


def select_slots(
    policy: MisfirePolicy, due_slots: Sequence[datetime], now: datetime
) -> SlotSelection:
    """Partition ``due_slots`` into slots to fire and slots missed.

    A slot no more than ``grace`` old is on time and always fires; the policy only governs the late
    ones. Duplicates are merged, so the result is a partition of the distinct input slots.
    """
    now = ensure_utc(now, field="now")
    slots = sorted({ensure_utc(slot, field="due_slots") for slot in due_slots})
    on_time = [slot for slot in slots if now - slot <= policy.grace]
    late = [slot for slot in slots if now - slot > policy.grace]
    if policy.kind is MisfireKind.SKIP:
        fired_late: list[datetime] = []
    elif policy.kind is MisfireKind.RUN_ONCE:
        fired_late = late[-1:] if not on_time else []
    else:
        fired_late = late[-policy.catch_up_cap :]
    missed = late[: len(late) - len(fired_late)]
    return SlotSelection(fire=tuple(fired_late + on_time), missed=tuple(missed))
