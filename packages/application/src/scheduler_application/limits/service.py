"""Operators manage named shared limits; anyone who may read tasks sees them and their use.

A limit is written whole (``put``: create or replace) by an operator or admin, each change an
event in the event log (``limit.updated``, ``limit.deleted``). What a limit does at dispatch is
the gates' (:mod:`.dispatch.gates`); this is its management and its current use: runs in flight
(in all, and per partition), the tokens its buckets hold, its circuit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler_application.accounts.access import Principal, ensure_can_read_tasks
from scheduler_application.dispatch.rate_limiting import limit_key, partition_key
from scheduler_application.errors import Conflict, NotFound
from scheduler_application.events.log import record_event
from scheduler_application.limits.circuits import CircuitBreakers
from scheduler_application.operations.queue_control import ensure_steers_queues
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.coordination import RateInspector
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.circuits import Circuit, CircuitState, limit_circuit
from scheduler_domain.errors import ValidationError
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.shared_limits import Partition, SharedLimit, validate_limit_name

LIMIT_FIELDS = (
    "description",
    "rate",
    "partition_by",
    "partition_rate",
    "max_concurrency",
    "failure_threshold",
    "cool_down_seconds",
)
#: Tasks a refused delete names (it counts the rest).
MAX_REFERRERS_NAMED = 10
#: Partitions whose buckets are read for a view (the busiest first).
MAX_PARTITIONS_SHOWN = 100


@dataclass(frozen=True, slots=True)
class LimitUse:
    in_flight: int
    in_flight_by_partition: dict[str, int]
    #: Tokens in the global bucket (None: no global rate, or no inspector).
    tokens: float | None
    tokens_by_partition: dict[str, float]
    tasks: int
    queues: list[str]


@dataclass(frozen=True, slots=True)
class LimitView:
    limit: SharedLimit
    use: LimitUse
    circuit: Circuit


@dataclass(frozen=True, slots=True)
class CircuitView:
    circuit: Circuit
    failure_threshold: int
    cool_down: timedelta
    reopens_at: datetime | None = None
    #: Runs the circuit holds pending while open or half-open (0 when closed): the pending
    #: runs bound to its limit. None for a host's circuit (not counted: the host is in each
    #: task's URL).
    held: int | None = None


def parse_limit(name: str, data: Any) -> SharedLimit:
    """A limit from a client's JSON object (``PUT /limits/{name}``, an ``apply`` file); the
    error names the field."""
    validate_limit_name(name)
    if not isinstance(data, Mapping):
        raise ValidationError("a limit must be a JSON object", field="body")
    for key in data:
        if key not in LIMIT_FIELDS and key != "name":
            raise ValidationError(
                f"unknown field {key!r}; a limit has {', '.join(LIMIT_FIELDS)}", field=str(key)
            )
    if "name" in data and data["name"] != name:
        raise ValidationError("name does not match the limit's name in the path", field="name")

    def rate(key: str) -> RateLimit | None:
        value = data.get(key)
        if value is None:
            return None
        try:
            return RateLimit.parse(value)
        except ValidationError as error:
            raise ValidationError(error.message, field=key) from None

    partition = data.get("partition_by")
    if partition is not None:
        try:
            partition = Partition(partition)
        except ValueError:
            raise ValidationError(
                "partition_by must be 'owner' or 'task'", field="partition_by"
            ) from None
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ValidationError("description must be a string", field="description")
    cool_down = data.get("cool_down_seconds")
    if cool_down is not None and (
        isinstance(cool_down, bool) or not isinstance(cool_down, int | float)
    ):
        raise ValidationError("cool_down_seconds must be a number", field="cool_down_seconds")
    return SharedLimit(
        name=name,
        description=description,
        rate=rate("rate"),
        partition_by=partition,
        partition_rate=rate("partition_rate"),
        max_concurrency=data.get("max_concurrency"),
        failure_threshold=data.get("failure_threshold"),
        cool_down=None if cool_down is None else timedelta(seconds=cool_down),
    )


def limit_to_spec(limit: SharedLimit) -> dict[str, Any]:
    return {
        "description": limit.description,
        "rate": None if limit.rate is None else str(limit.rate),
        "partition_by": None if limit.partition_by is None else limit.partition_by.value,
        "partition_rate": None if limit.partition_rate is None else str(limit.partition_rate),
        "max_concurrency": limit.max_concurrency,
        "failure_threshold": limit.failure_threshold,
        "cool_down_seconds": None if limit.cool_down is None else limit.cool_down.total_seconds(),
    }


async def _referrers(uow: UnitOfWork, name: str) -> list[str]:
    """What still names the limit, as a refused delete tells it: tasks (the first few by
    name, and how many in all), queues and templates."""
    found: list[str] = []
    count = await uow.limits.referencing_tasks(name)
    if count:
        names = await uow.limits.referencing_task_names(name, limit=MAX_REFERRERS_NAMED)
        more = f" and {count - len(names)} more" if count > len(names) else ""
        found.append(f"{count} task(s): {', '.join(names)}{more}")
    queues = [q.name for q in await uow.queue_settings.list() if name in q.limits]
    if queues:
        found.append(f"queue(s): {', '.join(queues)}")
    templates: list[str] = []
    cursor: str | None = None
    while True:
        page = await uow.templates.list(limit=500, cursor=cursor)
        templates += [t.name for t in page.items if name in (t.policies.get("limits") or ())]
        cursor = page.next_cursor
        if cursor is None:
            break
    if templates:
        found.append(f"template(s): {', '.join(sorted(templates))}")
    return found


class LimitService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        inspector: RateInspector | None = None,
        circuits: CircuitBreakers | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._inspector = inspector
        self._circuits = circuits if circuits is not None else CircuitBreakers()

    async def all(self, *, principal: Principal) -> list[LimitView]:
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            return [await self._view(uow, limit) for limit in await uow.limits.list()]

    async def get(self, name: str, *, principal: Principal) -> LimitView:
        ensure_can_read_tasks(principal)
        validate_limit_name(name)
        async with self._uow_factory() as uow:
            limit = await uow.limits.get(name)
            if limit is None:
                raise NotFound(f"limit {name!r} not found", field="name")
            return await self._view(uow, limit)

    async def put(self, limit: SharedLimit, *, principal: Principal) -> tuple[LimitView, bool]:
        """Create or replace; True when it was created."""
        ensure_steers_queues(principal)
        now = self._clock.now()
        limit.touch(actor=principal.actor, now=now)
        async with self._uow_factory() as uow:
            created = await uow.limits.get(limit.name) is None
            await uow.limits.save(limit)
            await record_event(
                uow,
                "limit.created" if created else "limit.updated",
                at=now,
                actor=principal.actor,
                subject=limit.name,
                detail=limit_to_spec(limit),
            )
            await uow.commit()
            return await self._view(uow, limit), created

    async def delete(self, name: str, *, principal: Principal) -> None:
        ensure_steers_queues(principal)
        validate_limit_name(name)
        async with self._uow_factory() as uow:
            if await uow.limits.get(name) is None:
                raise NotFound(f"limit {name!r} not found", field="name")
            referrers = await _referrers(uow, name)
            if referrers:
                raise Conflict(
                    f"limit {name!r} is still referenced by {'; '.join(referrers)}: remove "
                    "the references first",
                    field="name",
                )
            await uow.limits.delete(name)
            await record_event(
                uow, "limit.deleted", at=self._clock.now(), actor=principal.actor, subject=name
            )
            await uow.commit()

    async def circuits(self, *, principal: Principal) -> list[CircuitView]:
        """Every circuit that ever counted a failure, with its policy and when it reopens."""
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            stored = await uow.circuits.list()
            names = [c.name.partition(":")[2] for c in stored if c.name.startswith("limit:")]
            limits = {lim.name: lim for lim in await uow.limits.get_many(names)}
            holding = [
                c.name.partition(":")[2]
                for c in stored
                if c.state is not CircuitState.CLOSED and c.name.partition(":")[2] in limits
            ]
            held: dict[str, int] = {}
            if holding:
                settings = await uow.queue_settings.list()
                held = await uow.limits.count_pending(
                    {name: [q.name for q in settings if name in q.limits] for name in holding}
                )
        views = []
        for circuit in stored:
            policy = self._circuits.policy(circuit.name, limits)
            kind, _, name = circuit.name.partition(":")
            views.append(
                CircuitView(
                    circuit=circuit,
                    failure_threshold=policy.failure_threshold,
                    cool_down=policy.cool_down,
                    reopens_at=circuit.reopens_at(policy),
                    held=held.get(name, 0) if kind == "limit" else None,
                )
            )
        return views

    async def _view(self, uow: UnitOfWork, limit: SharedLimit) -> LimitView:
        settings = await uow.queue_settings.list()
        queues = [q.name for q in settings if limit.name in q.limits]
        in_flight = (await uow.limits.count_in_flight({limit.name: queues})).get(limit.name, 0)
        by_partition: dict[str, int] = {}
        if limit.partition_by is not None:
            by_partition = await uow.limits.count_in_flight_by_partition(
                limit.name, queues, by=limit.partition_by
            )
        now = self._clock.now()
        tokens = None
        tokens_by_partition: dict[str, float] = {}
        if self._inspector is not None:
            if limit.rate is not None:
                tokens = await self._inspector.tokens(limit_key(limit.name), limit.rate, now=now)
            if limit.partition_rate is not None:
                busiest = sorted(by_partition, key=lambda p: -by_partition[p])
                for partition in busiest[:MAX_PARTITIONS_SHOWN]:
                    tokens_by_partition[partition] = await self._inspector.tokens(
                        partition_key(limit.name, partition), limit.partition_rate, now=now
                    )
        [circuit] = await uow.circuits.get_many([limit_circuit(limit.name)]) or [
            Circuit(name=limit_circuit(limit.name), state=CircuitState.CLOSED)
        ]
        use = LimitUse(
            in_flight=in_flight,
            in_flight_by_partition=by_partition,
            tokens=None if tokens is None else round(tokens, 3),
            tokens_by_partition={k: round(v, 3) for k, v in tokens_by_partition.items()},
            tasks=await uow.limits.referencing_tasks(limit.name),
            queues=queues,
        )
        return LimitView(limit=limit, use=use, circuit=circuit)
