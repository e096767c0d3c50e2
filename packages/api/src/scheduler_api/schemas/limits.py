"""Named shared limits and circuit breakers as the API shows them."""

from __future__ import annotations

from datetime import datetime

import msgspec

from scheduler_application.limits.service import CircuitView, LimitView, limit_to_spec


class LimitUseOut(msgspec.Struct, kw_only=True):
    """``in_flight``: runs queued or running bound to the limit (through tasks' ``limits`` or
    their queue's), ``in_flight_by_partition`` per owner/task for a partitioned limit;
    ``tokens``: what the global bucket holds now (null: no rate, or not inspectable);
    ``tokens_by_partition``: the busiest partitions' buckets."""

    in_flight: int
    in_flight_by_partition: dict[str, int]
    tokens: float | None
    tokens_by_partition: dict[str, float]
    tasks: int
    queues: list[str]


class LimitOut(msgspec.Struct, kw_only=True):
    name: str
    description: str
    rate: str | None
    partition_by: str | None
    partition_rate: str | None
    max_concurrency: int | None
    failure_threshold: int | None
    cool_down_seconds: float | None
    updated_by: str | None
    updated_at: datetime | None
    use: LimitUseOut
    circuit: str

    @classmethod
    def of(cls, view: LimitView) -> LimitOut:
        limit = view.limit
        use = view.use
        return cls(
            name=limit.name,
            **limit_to_spec(limit),
            updated_by=limit.updated_by or None,
            updated_at=limit.updated_at,
            use=LimitUseOut(
                in_flight=use.in_flight,
                in_flight_by_partition=use.in_flight_by_partition,
                tokens=use.tokens,
                tokens_by_partition=use.tokens_by_partition,
                tasks=use.tasks,
                queues=use.queues,
            ),
            circuit=view.circuit.state.value,
        )


class LimitList(msgspec.Struct, kw_only=True):
    items: list[LimitOut]


class CircuitOut(msgspec.Struct, kw_only=True):
    """``name``: ``limit:<limit>`` or ``host:<host>``; ``state``: ``closed``, ``open`` or
    ``half_open``; ``failures``: failed runs in a row while closed; ``reopens_at``: when an open
    circuit lets its probe through; ``probe_run_id``: the run let through while half-open;
    ``held_runs``: the runs a limit's open or half-open circuit holds pending (0 when closed;
    null for a host's circuit: not counted)."""

    name: str
    state: str
    failures: int
    failure_threshold: int
    cool_down_seconds: float
    opened_at: datetime | None
    reopens_at: datetime | None
    probe_run_id: str | None
    updated_at: datetime | None
    held_runs: int | None = None

    @classmethod
    def of(cls, view: CircuitView) -> CircuitOut:
        circuit = view.circuit
        return cls(
            name=circuit.name,
            state=circuit.state.value,
            failures=circuit.failures,
            failure_threshold=view.failure_threshold,
            cool_down_seconds=view.cool_down.total_seconds(),
            opened_at=circuit.opened_at,
            reopens_at=view.reopens_at,
            probe_run_id=circuit.probe_run_id,
            updated_at=circuit.updated_at,
            held_runs=view.held,
        )


class CircuitList(msgspec.Struct, kw_only=True):
    items: list[CircuitOut]
