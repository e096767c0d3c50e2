"""Circuit breakers: stop sending runs at a destination that keeps failing.

A circuit is named after what it guards: ``limit:<name>`` (the runs of tasks bound to a named
limit) or ``host:<host>`` (the runs of ``http`` tasks calling that host). It is

* ``closed``: runs go out; consecutive failed runs are counted, a success resets the count.
  At ``failure_threshold`` failures in a row it opens.
* ``open``: runs bound for it are held ``pending`` (reason ``circuit open: <name>``) until
  ``cool_down`` has passed since it opened; then the next run is let through as the *probe*
  and the circuit is ``half_open``.
* ``half_open``: every other run is held; the probe's success closes the circuit, its failure
  opens it again (a fresh cool-down). A probe that reports nothing within a cool-down (lost,
  cancelled) is replaced by the next run.

While a circuit is open or half-open only the probe's outcome counts: runs that were already
out when it opened neither close nor re-open it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from scheduler_domain.clock import ensure_utc

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_COOL_DOWN = timedelta(seconds=30)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def limit_circuit(name: str) -> str:
    return f"limit:{name}"


def host_circuit(url: object) -> str | None:
    """The circuit of an ``http`` task's URL (None: no host to tell)."""
    if not isinstance(url, str):
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return f"host:{host.lower()}" if host else None


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    cool_down: timedelta = DEFAULT_COOL_DOWN


@dataclass(slots=True, kw_only=True)
class Circuit:
    name: str
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: datetime | None = None
    probe_run_id: str | None = None
    probe_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("opened_at", "probe_at", "updated_at"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, ensure_utc(value, field=name))

    @property
    def id(self) -> str:
        return self.name

    def reopens_at(self, policy: CircuitPolicy) -> datetime | None:
        """When an open circuit lets a probe through (None: it is not open)."""
        if self.state is CircuitState.OPEN and self.opened_at is not None:
            return self.opened_at + policy.cool_down
        if self.state is CircuitState.HALF_OPEN and self.probe_at is not None:
            return self.probe_at + policy.cool_down
        return None

    def admit(
        self, run_id: str, *, now: datetime, policy: CircuitPolicy
    ) -> tuple[bool, CircuitState | None]:
        """Whether a run may go out now, and the state entered if that changed the circuit
        (an open circuit past its cool-down turns ``half_open`` with this run as its probe)."""
        if self.state is CircuitState.CLOSED or run_id == self.probe_run_id:
            return True, None
        reopens = self.reopens_at(policy)
        if reopens is None or now < reopens:
            return False, None
        entered = None if self.state is CircuitState.HALF_OPEN else CircuitState.HALF_OPEN
        self.state = CircuitState.HALF_OPEN
        self.probe_run_id = run_id
        self.probe_at = now
        self.updated_at = now
        return True, entered

    def record(
        self, run_id: str, *, succeeded: bool, now: datetime, policy: CircuitPolicy
    ) -> CircuitState | None:
        """A run bound for this circuit ended; the state entered, if it changed."""
        if self.state is not CircuitState.CLOSED:
            if run_id != self.probe_run_id:
                return None
            return self._close(now) if succeeded else self._open(now)
        if succeeded:
            self.failures = 0
            self.updated_at = now
            return None
        self.failures += 1
        self.updated_at = now
        if self.failures >= policy.failure_threshold:
            return self._open(now)
        return None

    def _open(self, now: datetime) -> CircuitState:
        self.state = CircuitState.OPEN
        self.opened_at = now
        self.probe_run_id = None
        self.probe_at = None
        self.updated_at = now
        return CircuitState.OPEN

    def _close(self, now: datetime) -> CircuitState:
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = None
        self.probe_run_id = None
        self.probe_at = None
        self.updated_at = now
        return CircuitState.CLOSED
