"""What the use cases report about runs, for metrics.

The adapter (Prometheus, in :mod:`scheduler_infrastructure.telemetry`) turns these calls into
counters, histograms and gauges. Contract:

- Arguments are primitives from small fixed sets (run statuses, triggers, skip reasons, executor
  and queue names, dependency roles), so an implementation may use them as metric labels.
  Nothing here ever names a run, a task or a worker: those would grow without bound.
- Calls are made *after* the fact is committed, return at once and never raise: observing must
  not slow down or fail the use case that reports.
- ``queue_depths`` and ``workers_by_status`` report a whole snapshot; values not named in the
  latest snapshot are gone (a queue nobody uses any more stops being reported).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class RunObserver(Protocol):
    def run_created(self, trigger: str, count: int = 1) -> None:
        """Runs were created: ``schedule``, ``manual``, ``dependency`` or ``retry``."""

    def run_started(self, *, queue_wait: float) -> None:
        """A worker claimed a run ``queue_wait`` seconds after it was queued."""

    def run_finished(
        self, *, status: str, executor: str | None = None, duration: float | None = None
    ) -> None:
        """An attempt ended: ``succeeded``, ``failed``, ``timed_out`` (as its executor reported,
        with ``executor`` and ``duration`` in seconds when known), ``lost`` or ``cancelled``."""

    def retry_scheduled(self) -> None:
        """The retry policy granted a failed, timed-out or lost attempt another one."""

    def dead_lettered(self) -> None:
        """A failed attempt had no attempts left and moved to the dead letters."""

    def lease_expired(self) -> None:
        """The reaper found a running attempt whose worker stopped renewing its lease."""

    def slot_skipped(self, reason: str, count: int = 1) -> None:
        """Schedule slots that produced no run, by ``SkipReason`` value."""

    def schedule_lateness(self, seconds: float) -> None:
        """A schedule slot fired (its run was created) ``seconds`` after the slot."""

    def rate_limited(self) -> None:
        """A run was held back (its ``not_before`` moved later) by a rate limit."""

    def dependency_unavailable(self, dependency: str) -> None:
        """An operation failed because ``database``, ``broker`` or ``redis`` was unreachable."""

    def queue_depths(self, depths: Mapping[str, int]) -> None:
        """Messages waiting per queue, as the broker counts them (a full snapshot)."""

    def workers_by_status(self, counts: Mapping[str, int]) -> None:
        """Registered workers per ``WorkerStatus`` value (a full snapshot)."""

    def run_held(self, reason: str) -> None:
        """A pending run was held by a gate (``fair_share``, ``circuit_open``,
        ``limit_concurrency``)."""
        ...

    def circuit_states(self, states: Mapping[str, str]) -> None:
        """Every circuit's state now (gauge)."""
        ...

    def limits_in_flight(self, counts: Mapping[str, int]) -> None:
        """Runs queued or running per named limit now (gauge)."""
        ...


class NullObserver:
    """Observes nothing: the default of every use case, so wiring metrics is optional."""

    def run_created(self, trigger: str, count: int = 1) -> None:
        pass

    def run_started(self, *, queue_wait: float) -> None:
        pass

    def run_finished(
        self, *, status: str, executor: str | None = None, duration: float | None = None
    ) -> None:
        pass

    def retry_scheduled(self) -> None:
        pass

    def dead_lettered(self) -> None:
        pass

    def lease_expired(self) -> None:
        pass

    def slot_skipped(self, reason: str, count: int = 1) -> None:
        pass

    def schedule_lateness(self, seconds: float) -> None:
        pass

    def rate_limited(self) -> None:
        pass

    def dependency_unavailable(self, dependency: str) -> None:
        pass

    def queue_depths(self, depths: Mapping[str, int]) -> None:
        pass

    def workers_by_status(self, counts: Mapping[str, int]) -> None:
        pass

    def run_held(self, reason: str) -> None:
        pass

    def circuit_states(self, states: Mapping[str, str]) -> None:
        pass

    def limits_in_flight(self, counts: Mapping[str, int]) -> None:
        pass


NO_OBSERVER: RunObserver = NullObserver()
