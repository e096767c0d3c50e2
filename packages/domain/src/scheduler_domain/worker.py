"""Workers as the scheduler sees them: registered capacity, liveness and draining."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from scheduler_domain.errors import DomainError, ValidationError
from scheduler_domain.ids import new_id


class WorkerOffline(DomainError):
    """Only a registered, live worker can be told to take work again."""

    code = "worker_offline"


class WorkerStatus(StrEnum):
    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"


@dataclass(slots=True, kw_only=True)
class Worker:
    name: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    capacity: int
    started_at: datetime
    heartbeat_at: datetime
    labels: frozenset[str] = frozenset()
    active_runs: int = 0
    status: WorkerStatus = WorkerStatus.ONLINE
    software_version: str = ""
    #: The credential that registered the worker over HTTP and alone may speak for it; None
    #: for in-process workers, which reach the database themselves.
    principal_id: str | None = None
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        if not 1 <= self.capacity <= 10_000:
            raise ValidationError("capacity must be between 1 and 10000", field="capacity")
        if not self.queues:
            raise ValidationError("a worker consumes at least one queue", field="queues")

    @property
    def direct_queue(self) -> str:
        """The worker's own queue, used by the targeted dispatch strategies."""
        return f"worker.{self.id}"

    @property
    def free_slots(self) -> int:
        return max(self.capacity - self.active_runs, 0)

    def record_heartbeat(self, *, now: datetime, active_runs: int) -> None:
        self.heartbeat_at = now
        self.active_runs = max(active_runs, 0)
        if self.status is WorkerStatus.OFFLINE:
            self.status = WorkerStatus.ONLINE

    def is_alive(self, *, now: datetime, timeout: timedelta) -> bool:
        return self.status is not WorkerStatus.OFFLINE and now - self.heartbeat_at < timeout

    def accepts_work(self, *, now: datetime, timeout: timedelta) -> bool:
        return self.status is WorkerStatus.ONLINE and self.is_alive(now=now, timeout=timeout)

    def drain(self) -> None:
        """Stop taking new runs; the worker stays registered, heartbeats and finishes what it
        holds, until it is undrained (or stopped)."""
        if self.status is WorkerStatus.ONLINE:
            self.status = WorkerStatus.DRAINING

    def undrain(self) -> None:
        """Take work again. An offline worker is gone: a restarted process registers anew."""
        if self.status is WorkerStatus.OFFLINE:
            raise WorkerOffline(f"worker {self.id} is offline; only a live worker can be undrained")
        self.status = WorkerStatus.ONLINE

    def is_retired(self, *, now: datetime, retention: timedelta) -> bool:
        """Offline for longer than ``retention``: its row may go (``go_offline`` stamps
        ``heartbeat_at`` with when it went silent)."""
        return self.status is WorkerStatus.OFFLINE and now - self.heartbeat_at > retention

    def go_offline(self, *, now: datetime) -> None:
        self.status = WorkerStatus.OFFLINE
        self.active_runs = 0
        self.heartbeat_at = now
