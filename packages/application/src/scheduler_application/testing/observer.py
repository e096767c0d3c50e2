"""A :class:`~scheduler_application.ports.observer.RunObserver` that records what it was told,
and a redactor that hides the strings it is given."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class RecordingObserver:
    """Counts by name and label value (``created["manual"]``, ``finished["failed"]``); keeps
    every observed duration, wait and lateness; keeps the latest gauge snapshots."""

    created: Counter[str] = field(default_factory=Counter)
    finished: Counter[str] = field(default_factory=Counter)
    durations: list[tuple[str, str, float]] = field(default_factory=list)
    queue_waits: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    unavailable: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    dead_letters: int = 0
    leases_expired: int = 0
    rate_limited_runs: int = 0
    depths: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)
    held: Counter[str] = field(default_factory=Counter)
    circuits: dict[str, str] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)

    def run_created(self, trigger: str, count: int = 1) -> None:
        self.created[trigger] += count

    def run_started(self, *, queue_wait: float) -> None:
        self.queue_waits.append(queue_wait)

    def run_finished(
        self, *, status: str, executor: str | None = None, duration: float | None = None
    ) -> None:
        self.finished[status] += 1
        if executor is not None and duration is not None:
            self.durations.append((executor, status, duration))

    def retry_scheduled(self) -> None:
        self.retries += 1

    def dead_lettered(self) -> None:
        self.dead_letters += 1

    def lease_expired(self) -> None:
        self.leases_expired += 1

    def slot_skipped(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count

    def schedule_lateness(self, seconds: float) -> None:
        self.lateness.append(seconds)

    def rate_limited(self) -> None:
        self.rate_limited_runs += 1

    def dependency_unavailable(self, dependency: str) -> None:
        self.unavailable[dependency] += 1

    def queue_depths(self, depths: Mapping[str, int]) -> None:
        self.depths = dict(depths)

    def workers_by_status(self, counts: Mapping[str, int]) -> None:
        self.workers = dict(counts)

    def run_held(self, reason: str) -> None:
        self.held[reason] += 1

    def circuit_states(self, states: Mapping[str, str]) -> None:
        self.circuits = dict(states)

    def limits_in_flight(self, counts: Mapping[str, int]) -> None:
        self.limits = dict(counts)


@dataclass
class FakeRedactor:
    """Replaces each of ``secrets`` with ``[REDACTED]``; records the texts it was given."""

    secrets: tuple[str, ...] = ()
    seen: list[str] = field(default_factory=list)

    def redact(self, text: str) -> str:
        self.seen.append(text)
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        return text
