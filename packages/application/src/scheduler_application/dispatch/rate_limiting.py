"""Rate limits on publishing runs: per task (``Task.rate_limit``), per queue, and the named
shared limits' (:mod:`scheduler_domain.shared_limits`) global and per-partition rates.

A queue's limit is the one stored in its settings (set through the API or CLI, see
:mod:`scheduler_application.operations.queue_control`), else the configured default
(``dispatcher.queue_rate_limits``); a run under both a task and a queue limit needs a token
from each bucket.

A limited run is delayed, never dropped: the relay pushes its ``not_before`` to when the bucket
will have a token and leaves it pending. The :class:`RateLimiter` port answers "how long until a
token" without taking one; within one relay batch, later runs of the same key are spaced one
token interval apart behind the first delayed one, so a burst of waiting runs comes due one by
one instead of all at the same instant (where all but one would be delayed again).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler_application.ports.coordination import RateLimiter
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.task import Task


def task_key(task_id: str) -> str:
    return f"task:{task_id}"


def queue_key(queue: str) -> str:
    return f"queue:{queue}"


def limit_key(name: str) -> str:
    """The bucket of a named shared limit's global rate."""
    return f"limit:{name}"


def partition_key(name: str, partition: str) -> str:
    """The bucket of one partition (an owner, a task) of a named shared limit."""
    return f"limit:{name}:{partition}"


#: A named limit's bucket: its key and rate.
SharedBucket = tuple[str, RateLimit]


@dataclass(frozen=True, slots=True)
class Delay:
    """A run must wait ``wait`` for the bucket ``key``."""

    key: str
    wait: timedelta


@dataclass(slots=True)
class RateBatch:
    """Per-batch memory: how far each denied key is already booked."""

    booked_until: dict[str, timedelta] = field(default_factory=dict)


class RunRateLimits:
    def __init__(
        self,
        *,
        limiter: RateLimiter,
        queue_limits: Mapping[str, RateLimit] | None = None,
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        self._limiter = limiter
        self._queue_limits = dict(queue_limits or {})
        self._observer = observer

    def batch(self) -> RateBatch:
        return RateBatch()

    def limited(self, task: Task, *, queue_limit: RateLimit | None = None) -> bool:
        """``queue_limit``: the queue's stored limit, overriding the configured default."""
        return (
            task.rate_limit is not None
            or queue_limit is not None
            or task.queue in self._queue_limits
        )

    async def admit(
        self,
        task: Task,
        *,
        now: datetime,
        batch: RateBatch,
        queue_limit: RateLimit | None = None,
        shared: Sequence[SharedBucket] = (),
    ) -> Delay | None:
        """None when the run may be published now (its tokens are taken), else how long it must
        wait. The task's bucket is asked first, then its queue's (``queue_limit`` if given,
        else the configured default), then the named limits' ``shared`` buckets in order."""
        delay = await self._admit(
            task, now=now, batch=batch, queue_limit=queue_limit, shared=shared
        )
        if delay is not None:
            self._observer.rate_limited()
        return delay

    async def _admit(
        self,
        task: Task,
        *,
        now: datetime,
        batch: RateBatch,
        queue_limit: RateLimit | None,
        shared: Sequence[SharedBucket],
    ) -> Delay | None:
        for key, limit in (*self._buckets(task, queue_limit), *shared):
            booked = batch.booked_until.get(key)
            if booked is not None:
                booked += timedelta(seconds=1 / limit.per_second)
                batch.booked_until[key] = booked
                return Delay(key, booked)
            wait = await self._limiter.acquire(key, limit, now=now)
            if wait > timedelta(0):
                batch.booked_until[key] = wait
                return Delay(key, wait)
        return None

    def _buckets(
        self, task: Task, queue_limit: RateLimit | None
    ) -> Iterator[tuple[str, RateLimit]]:
        if task.rate_limit is not None:
            yield task_key(task.id), task.rate_limit
        if queue_limit is None:
            queue_limit = self._queue_limits.get(task.queue)
        if queue_limit is not None:
            yield queue_key(task.queue), queue_limit
