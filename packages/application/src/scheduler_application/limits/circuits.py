"""Circuit breakers over the dispatch path (see :mod:`scheduler_domain.circuits`).

:class:`CircuitBreakers` is shared by the two places that touch a circuit:

* the gates (:mod:`.dispatch.gates`) ask :meth:`CircuitBreakers.hold` before a run goes out:
  a run bound for an open circuit stays ``pending`` with the reason ``circuit open: <name>``
  and a ``not_before`` at the end of the cool-down; past it, the first run is let through as
  the probe and the circuit turns ``half_open`` (written, with its event, in the gates'
  transaction, the row locked so that one dispatcher only sends the probe);
* the outcome of a run (:mod:`.execution`) is :meth:`CircuitBreakers.record`-ed in the
  transaction that stores it; a circuit whose count or state changes is locked and written.

Every transition is an event in the event log: ``circuit.opened``, ``circuit.half_open``,
``circuit.closed``. A success on a closed circuit with no failures writes nothing, so a
healthy destination costs one indexed read per batch of outcomes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler_application.events.log import record_event
from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.circuits import (
    DEFAULT_COOL_DOWN,
    DEFAULT_FAILURE_THRESHOLD,
    Circuit,
    CircuitPolicy,
    CircuitState,
    host_circuit,
    limit_circuit,
)
from scheduler_domain.run import TaskRun
from scheduler_domain.shared_limits import SharedLimit
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task

ACTOR = "circuit-breaker"
EVENT_KINDS = {
    CircuitState.OPEN: "circuit.opened",
    CircuitState.HALF_OPEN: "circuit.half_open",
    CircuitState.CLOSED: "circuit.closed",
}
#: A half-open circuit's other runs look again this often (the probe may end any time).
HALF_OPEN_RECHECK = timedelta(seconds=1)
_FAILED = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT})
_COUNTED = _FAILED | {RunStatus.SUCCEEDED}


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    """The defaults, and per-host overrides (``host`` → policy)."""

    default: CircuitPolicy = field(default_factory=CircuitPolicy)
    hosts: Mapping[str, CircuitPolicy] = field(default_factory=dict)
    #: Whether ``http`` tasks get a circuit per destination host.
    per_host: bool = True


@dataclass(frozen=True, slots=True)
class Held:
    """Why a run waits, and until when."""

    circuit: str
    until: datetime


def circuit_names(task: Task, limits: Mapping[str, SharedLimit], *, per_host: bool) -> list[str]:
    """The circuits a run of ``task`` is bound for: its existing named limits' and, for an
    ``http`` task, its destination host's."""
    names = [limit_circuit(name) for name in task.limits if name in limits]
    if per_host and task.executor == "http":
        host = host_circuit(task.params.get("url"))
        if host is not None:
            names.append(host)
    return names


class CircuitBreakers:
    def __init__(self, settings: CircuitSettings | None = None) -> None:
        self.settings = settings if settings is not None else CircuitSettings()

    def policy(self, name: str, limits: Mapping[str, SharedLimit]) -> CircuitPolicy:
        default = self.settings.default
        kind, _, rest = name.partition(":")
        if kind == "host":
            return self.settings.hosts.get(rest, default)
        limit = limits.get(rest)
        if limit is None:
            return default
        return CircuitPolicy(
            failure_threshold=limit.failure_threshold or default.failure_threshold,
            cool_down=limit.cool_down or default.cool_down,
        )

    def names(self, task: Task, limits: Mapping[str, SharedLimit]) -> list[str]:
        return circuit_names(task, limits, per_host=self.settings.per_host)

    async def hold(
        self,
        uow: UnitOfWork,
        run: TaskRun,
        names: Sequence[str],
        circuits: dict[str, Circuit],
        limits: Mapping[str, SharedLimit],
        *,
        now: datetime,
    ) -> Held | None:
        """None when ``run`` may go out past every circuit in ``names`` (``circuits``: their
        stored state, read once per pass and kept current here)."""
        for name in names:
            circuit = circuits.get(name)
            if circuit is None or circuit.state is CircuitState.CLOSED:
                continue
            policy = self.policy(name, limits)
            if circuit.probe_run_id == run.id:
                continue
            reopens = circuit.reopens_at(policy)
            if reopens is not None and now >= reopens:
                if name not in await uow.circuits.lock_many([name]):
                    return Held(name, now + HALF_OPEN_RECHECK)
                allowed, entered = circuit.admit(run.id, now=now, policy=policy)
                if allowed:
                    await uow.circuits.save(circuit)
                    if entered is not None:
                        await _event(uow, circuit, entered, now=now, run_id=run.id)
                    continue
            if circuit.state is CircuitState.HALF_OPEN or reopens is None:
                return Held(name, now + HALF_OPEN_RECHECK)
            return Held(name, max(reopens, now + HALF_OPEN_RECHECK))
        return None

    async def record(
        self,
        uow: UnitOfWork,
        outcomes: Iterable[tuple[TaskRun, Task, RunStatus]],
        *,
        now: datetime,
    ) -> list[tuple[str, CircuitState]]:
        """Count the attempts in ``outcomes`` (each run, its task, how the attempt ended:
        succeeded, failed or timed out; others are not counted) against their circuits; the
        transitions made."""
        bound: list[tuple[TaskRun, bool, list[str]]] = []
        outcomes = list(outcomes)
        wanted_limits = {name for _, task, _ in outcomes for name in task.limits}
        limits: dict[str, SharedLimit] = {}
        if wanted_limits:
            limits = {lim.name: lim for lim in await uow.limits.get_many(sorted(wanted_limits))}
        for run, task, status in outcomes:
            if status not in _COUNTED:
                continue
            names = self.names(task, limits)
            if names:
                bound.append((run, status in _FAILED, names))
        if not bound:
            return []
        every = sorted({name for _, _, names in bound for name in names})
        stored = {c.name: c for c in await uow.circuits.get_many(every)}
        touched = set()
        for _, failed, names in bound:
            for name in names:
                circuit = stored.get(name)
                if circuit is None and not failed:
                    continue
                if (
                    circuit is not None
                    and not failed
                    and circuit.state is CircuitState.CLOSED
                    and circuit.failures == 0
                ):
                    continue
                touched.add(name)
        if not touched:
            return []
        await uow.circuits.ensure(sorted(touched - set(stored)), now=now)
        locked = {c.name: c for c in await uow.circuits.get_many(sorted(touched), for_update=True)}
        transitions: list[tuple[str, CircuitState]] = []
        for run, failed, names in bound:
            for name in names:
                circuit = locked.get(name)
                if circuit is None:
                    continue
                entered = circuit.record(
                    run.id,
                    succeeded=not failed,
                    now=now,
                    policy=self.policy(name, limits),
                )
                if entered is not None:
                    transitions.append((name, entered))
                    await _event(uow, circuit, entered, now=now, run_id=run.id)
        for circuit in locked.values():
            await uow.circuits.save(circuit)
        return transitions


async def _event(
    uow: UnitOfWork, circuit: Circuit, entered: CircuitState, *, now: datetime, run_id: str
) -> None:
    await record_event(
        uow,
        EVENT_KINDS[entered],
        at=now,
        actor=ACTOR,
        subject=circuit.name,
        detail={
            "circuit": circuit.name,
            "state": entered.value,
            "run_id": run_id,
            "failures": circuit.failures,
        },
    )


__all__ = [
    "DEFAULT_COOL_DOWN",
    "DEFAULT_FAILURE_THRESHOLD",
    "CircuitBreakers",
    "CircuitSettings",
    "Held",
]
