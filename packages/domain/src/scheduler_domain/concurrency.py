"""What a new slot does while earlier runs of the same task are still active or waiting."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scheduler_domain.errors import ValidationError


class ConcurrencyPolicy(StrEnum):
    ALLOW = "allow"  # overlapping runs are fine
    FORBID = "forbid"  # never overlap: drop the new slot
    REPLACE = "replace"  # the newest slot wins: cancel what is there
    BUFFER_ONE = "buffer_one"  # overlap by at most one queued run behind the active ones


class ConcurrencyAction(StrEnum):
    CREATE = "create"
    SKIP = "skip"
    REPLACE = "replace"  # cancel the active and waiting runs, then create


@dataclass(frozen=True, slots=True)
class ConcurrencyDecision:
    """The action plus, for a skip, the reason recorded so users can ask why a slot did not run."""

    action: ConcurrencyAction
    reason: str | None = None


_CREATE = ConcurrencyDecision(ConcurrencyAction.CREATE)
_REPLACE = ConcurrencyDecision(ConcurrencyAction.REPLACE)


def decide_concurrency(
    policy: ConcurrencyPolicy, *, active: int, waiting: int
) -> ConcurrencyDecision:
    """Decide for a new run given ``active`` (running) and ``waiting`` (pending/queued) runs."""
    for name, value in (("active", active), ("waiting", waiting)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(f"{name} must be a non-negative integer", field=name)
    try:
        policy = ConcurrencyPolicy(policy)
    except ValueError:
        raise ValidationError(
            f"unknown concurrency policy {policy!r}", field="concurrency"
        ) from None
    busy = active + waiting > 0
    match policy:
        case ConcurrencyPolicy.ALLOW:
            return _CREATE
        case ConcurrencyPolicy.FORBID:
            return ConcurrencyDecision(ConcurrencyAction.SKIP, "forbid") if busy else _CREATE
        case ConcurrencyPolicy.REPLACE:
            return _REPLACE if busy else _CREATE
        case ConcurrencyPolicy.BUFFER_ONE:
            if waiting:
                return ConcurrencyDecision(ConcurrencyAction.SKIP, "buffer_full")
            return _CREATE
