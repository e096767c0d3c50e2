"""The domain's exceptions: one root, narrow subclasses.

Every error a caller might want to show a user carries the name of the offending ``field`` so
that adapters (the API, the CLI, the config loader) can point at it without parsing messages.
"""

from __future__ import annotations

from collections.abc import Sequence


class DomainError(Exception):
    """Root of every error raised by the domain."""

    code = "domain_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationError(DomainError):
    """A value does not satisfy a domain rule; ``field`` names it."""

    code = "validation_error"


class InvalidSchedule(ValidationError):
    code = "invalid_schedule"


class InvalidRateLimit(ValidationError):
    code = "invalid_rate_limit"


class DependencyCycle(ValidationError):
    """Tasks would depend on themselves; ``cycle`` lists the loop, first element repeated last."""

    code = "dependency_cycle"

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__("dependency cycle: " + " -> ".join(self.cycle), field="depends_on")


class IllegalTransition(DomainError):
    """A run was asked to move between two statuses the transition table does not connect."""

    code = "illegal_transition"

    def __init__(self, current: str, target: str) -> None:
        self.current = current
        self.target = target
        super().__init__(f"a run cannot go from {current!r} to {target!r}", field="status")


class StaleFencingToken(DomainError):
    """A heartbeat or outcome carried a token from a claim that has since been superseded."""

    code = "stale_fencing_token"

    def __init__(self, *, expected: int, got: int) -> None:
        super().__init__(f"fencing token {got} is stale (current is {expected})", field="token")


class LeaseLost(DomainError):
    """The attempt is no longer running under this worker's lease (finished, lost or cancelled)."""

    code = "lease_lost"
