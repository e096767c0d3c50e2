"""Sampling what the cluster holds right now, for the gauges: messages waiting per queue and
workers per status.

A dispatcher loop samples every few seconds (counters are pushed as things happen; levels are
polled). With several dispatchers each reports the same cluster-wide values, so dashboards and
alerts take ``max`` over them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from scheduler_application.errors import Unavailable
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.queue import RunQueue
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.worker import WorkerStatus

logger = logging.getLogger("scheduler.gauges")

#: Queues sampled per round (by name): queue names come from task definitions, and a label
#: must not grow without bound.
MAX_QUEUES = 100
DEPTH_TIMEOUT = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class GaugeSample:
    queue_depths: dict[str, int] = field(default_factory=dict)
    workers_by_status: dict[str, int] = field(default_factory=dict)


class ClusterGauges:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        queue: RunQueue,
        observer: RunObserver = NO_OBSERVER,
        max_queues: int = MAX_QUEUES,
    ) -> None:
        self._uow_factory = uow_factory
        self._queue = queue
        self._observer = observer
        self._max_queues = max_queues

    async def sample(self) -> GaugeSample:
        """Read the levels and report them to the observer. Queues are the ones tasks name and
        live workers consume (never a worker's direct queue); a queue whose depth the broker
        does not give is left out of this round."""
        async with self._uow_factory() as uow:
            names = set(await uow.tasks.queue_names())
            workers = await uow.workers.list()
        counts = dict.fromkeys((status.value for status in WorkerStatus), 0)
        for worker in workers:
            counts[worker.status.value] += 1
            if worker.status is not WorkerStatus.OFFLINE:
                names.update(worker.queues)
        ordered = sorted(names)[: self._max_queues]
        found = await asyncio.gather(*(self._depth(name) for name in ordered))
        depths = {name: depth for name, depth in zip(ordered, found, strict=True) if depth >= 0}
        self._observer.queue_depths(depths)
        self._observer.workers_by_status(counts)
        await self._limits()
        return GaugeSample(queue_depths=depths, workers_by_status=counts)

    async def _limits(self) -> None:
        """Circuits' states and named limits' runs in flight."""
        async with self._uow_factory() as uow:
            circuits = await uow.circuits.list()
            limits = await uow.limits.list()
            settings = await uow.queue_settings.list()
            bound = {
                limit.name: [q.name for q in settings if limit.name in q.limits] for limit in limits
            }
            in_flight = await uow.limits.count_in_flight(bound) if bound else {}
        self._observer.circuit_states({c.name: c.state.value for c in circuits})
        self._observer.limits_in_flight(in_flight)

    async def _depth(self, name: str) -> int:
        try:
            async with asyncio.timeout(DEPTH_TIMEOUT.total_seconds()):
                return await self._queue.depth(name)
        except Unavailable as error:
            self._observer.dependency_unavailable(error.dependency)
        except Exception as error:  # a broker problem must not stop the sampling
            logger.warning("depth of queue %r unavailable: %s", name, type(error).__name__)
        return -1
