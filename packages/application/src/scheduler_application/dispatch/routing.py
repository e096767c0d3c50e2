"""Where a run is published: the task's queue, or one chosen worker's direct queue.

``queue`` (the default) leaves the choice to the competing consumers of the task's queue. The
targeted strategies pick one live worker whose labels cover the task's and whose queues include
the task's queue, and publish to that worker's direct queue (``worker.<id>``), which every worker
runtime consumes besides its own queues:

* ``round_robin``: the eligible worker this dispatcher assigned the task to least recently; ties
  (workers never assigned, e.g. after a restart) are broken by a random rank drawn once per
  dispatcher, so restarts do not keep favouring the same worker.
* ``least_loaded``: the most free slots: capacity minus the active runs of its last heartbeat,
  minus the runs this dispatcher routed to it since that heartbeat.
* ``random``: uniformly among the eligible workers.

Required labels are honoured by every strategy. Under ``queue`` a task that requires labels is
not left to whichever worker of its queue asks first: it goes to the direct queue of the
eligible worker with the most free slots (as ``least_loaded``).

The router chooses among the workers the eligibility gate found (:meth:`Router.eligible`, step 2
of :mod:`.gates`); a task that requires labels no live worker carries never gets here: that gate
holds it. With no eligible worker a run of a task *without* required labels falls back to the
task's queue rather than waiting: any worker of that queue may run it, a worker that registers
later picks it up, and it is never stuck behind a worker that may not come back. The memory used
is per dispatcher and bounded.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler_domain.task import DispatchStrategy, Task
from scheduler_domain.worker import Worker

DEFAULT_WORKER_TIMEOUT = timedelta(seconds=30)
#: Tasks whose round-robin history is remembered; the oldest are forgotten beyond this.
MAX_REMEMBERED_TASKS = 10_000
DIRECT_QUEUE_PREFIX = "worker."


@dataclass(frozen=True, slots=True)
class Route:
    """The queue to publish to and, for a targeted strategy, the worker chosen."""

    queue: str
    worker_id: str | None = None
    strategy: DispatchStrategy = DispatchStrategy.QUEUE
    fallback: bool = False

    @property
    def targeted(self) -> bool:
        return self.worker_id is not None or self.fallback

    def detail(self) -> dict[str, object]:
        """What the run's ``queued`` event records about the choice."""
        detail: dict[str, object] = {"strategy": self.strategy.value}
        if self.worker_id is not None:
            detail["worker_id"] = self.worker_id
        if self.fallback:
            detail["fallback"] = "no eligible worker"
        return detail


class Router:
    """Chooses a :class:`Route` per run; one instance per dispatcher, reused across batches."""

    def __init__(
        self,
        *,
        worker_timeout: timedelta = DEFAULT_WORKER_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        if worker_timeout <= timedelta(0):
            raise ValueError("worker_timeout must be positive")
        self.worker_timeout = worker_timeout
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not security
        self._sequence = itertools.count()
        self._rank: dict[str, float] = {}
        self._last_assigned: dict[str, dict[str, int]] = {}
        self._routed_since: dict[str, tuple[datetime, int]] = {}

    def eligible(self, task: Task, workers: Sequence[Worker], *, now: datetime) -> list[Worker]:
        """Live workers that accept work, consume the task's queue and carry its labels."""
        return sorted(
            (
                w
                for w in workers
                if w.accepts_work(now=now, timeout=self.worker_timeout)
                and task.queue in w.queues
                and task.runs_on(w.labels)
            ),
            key=lambda w: w.id,
        )

    def route(
        self, task: Task, candidates: Sequence[Worker], *, default_queue: str | None = None
    ) -> Route:
        """The route of one run of ``task`` among ``candidates``, the workers
        :meth:`eligible` found. ``default_queue`` (the task's queue if not given) is used by
        the ``queue`` strategy."""
        strategy = task.strategy
        if strategy is DispatchStrategy.QUEUE and not task.labels:
            return Route(default_queue if default_queue is not None else task.queue)
        if not candidates:
            return Route(task.queue, strategy=strategy, fallback=True)
        if strategy is DispatchStrategy.RANDOM:
            chosen = self._rng.choice(candidates)
        elif strategy in (DispatchStrategy.LEAST_LOADED, DispatchStrategy.QUEUE):
            chosen = self._least_loaded(task, candidates)
        else:
            chosen = self._least_recent(task, candidates)
        self._record(task, chosen, candidates)
        return Route(chosen.direct_queue, worker_id=chosen.id, strategy=strategy)

    # -- choices ---------------------------------------------------------------------------------

    def _least_recent(self, task: Task, candidates: Sequence[Worker]) -> Worker:
        last = self._last_assigned.get(task.id, {})
        return min(candidates, key=lambda w: (last.get(w.id, -1), self._rank_of(w.id)))

    def _least_loaded(self, task: Task, candidates: Sequence[Worker]) -> Worker:
        last = self._last_assigned.get(task.id, {})
        return min(
            candidates,
            key=lambda w: (-self._free_slots(w), last.get(w.id, -1), self._rank_of(w.id)),
        )

    def _free_slots(self, worker: Worker) -> int:
        """Free slots as of the last heartbeat, less what we sent it since (not yet counted)."""
        seen = self._routed_since.get(worker.id)
        routed = seen[1] if seen is not None and seen[0] == worker.heartbeat_at else 0
        return worker.capacity - worker.active_runs - routed

    def _rank_of(self, worker_id: str) -> float:
        rank = self._rank.get(worker_id)
        if rank is None:
            if len(self._rank) >= MAX_REMEMBERED_TASKS:
                self._rank.clear()
            rank = self._rank[worker_id] = self._rng.random()
        return rank

    def _record(self, task: Task, worker: Worker, candidates: Sequence[Worker]) -> None:
        current = {w.id for w in candidates}
        history = {
            worker_id: seq
            for worker_id, seq in self._last_assigned.pop(task.id, {}).items()
            if worker_id in current
        }
        history[worker.id] = next(self._sequence)
        self._last_assigned[task.id] = history  # re-inserted: the dict stays in LRU order
        if len(self._last_assigned) > MAX_REMEMBERED_TASKS:
            del self._last_assigned[next(iter(self._last_assigned))]
        seen = self._routed_since.get(worker.id)
        routed = seen[1] if seen is not None and seen[0] == worker.heartbeat_at else 0
        self._routed_since[worker.id] = (worker.heartbeat_at, routed + 1)
        if len(self._routed_since) > MAX_REMEMBERED_TASKS:
            del self._routed_since[next(iter(self._routed_since))]
