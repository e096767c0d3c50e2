"""Workers as operators see them, and the bodies of the HTTP worker protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from scheduler_api.schemas.runs import RunOut
from scheduler_application.execution.service import ClaimedRun
from scheduler_domain.worker import Worker, WorkerStatus

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
QueueName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Token = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class WorkerOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    hostname: str
    pid: int
    queues: list[str]
    labels: list[str]
    capacity: int
    active_runs: int
    status: WorkerStatus
    started_at: datetime
    heartbeat_at: datetime
    version: str

    @classmethod
    def of(cls, worker: Worker) -> WorkerOut:
        return cls(
            id=worker.id,
            name=worker.name,
            hostname=worker.hostname,
            pid=worker.pid,
            queues=list(worker.queues),
            labels=sorted(worker.labels),
            capacity=worker.capacity,
            active_runs=worker.active_runs,
            status=worker.status,
            started_at=worker.started_at,
            heartbeat_at=worker.heartbeat_at,
            version=worker.software_version,
        )


class WorkerPage(msgspec.Struct, kw_only=True):
    items: list[WorkerOut]
    next_cursor: str | None
    limit: int


# -- the worker protocol -------------------------------------------------------------------------


class RegisterIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    hostname: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    pid: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    queues: Annotated[list[QueueName], msgspec.Meta(min_length=1, max_length=100)]
    capacity: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    labels: Annotated[list[Label], msgspec.Meta(max_length=100)] = []
    version: Annotated[str, msgspec.Meta(max_length=64)] = ""


class WorkerRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    worker_id: Id


class ClaimOut(msgspec.Struct, kw_only=True):
    """A run now held by the worker: present ``token`` with heartbeats and the outcome, and
    heartbeat before ``lease_expires_at``."""

    run: RunOut
    token: int
    lease_expires_at: datetime | None
    executor: str
    params: dict[str, Any]
    timeout_seconds: float | None
    #: The task's secret environment, decrypted: set it in the task process's environment
    #: beside ``params.env``, never log it, and mask its values in what the run reports (the
    #: server masks them again). Given to a ``worker`` credential only.
    secret_env: dict[str, str] = {}

    @classmethod
    def of(cls, claimed: ClaimedRun) -> ClaimOut:
        return cls(
            run=RunOut.of(claimed.run),
            token=claimed.token,
            lease_expires_at=claimed.run.lease_expires_at,
            executor=claimed.executor,
            params=dict(claimed.params),
            timeout_seconds=claimed.timeout_seconds,
            secret_env=dict(claimed.secret_env),
        )


class HeldRun(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    run_id: Id
    token: Token


class HeartbeatIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    worker_id: Id
    runs: Annotated[list[HeldRun], msgspec.Meta(max_length=10_000)] = []


class HeartbeatOut(msgspec.Struct, kw_only=True):
    status: WorkerStatus
    renewed: list[str]


class OutcomeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How an attempt ended. ``failed`` and ``timed_out`` get their retry (or the dead letters)
    by the task's retry policy."""

    worker_id: Id
    token: Token
    status: Literal["succeeded", "failed", "timed_out"]
    result: dict[str, Any] = {}
    error: str | None = None
    output: str | None = None


class ReleaseIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    worker_id: Id
    token: Token
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class SettlementOut(msgspec.Struct, kw_only=True):
    run: RunOut
    retry: RunOut | None
    dead_lettered: bool
