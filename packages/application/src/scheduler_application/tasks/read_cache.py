"""Tasks as last read, kept in the API process: ``GET /tasks/{id}`` without the database.

:class:`TaskCache` maps a task's id to the :class:`Task` last read from the database, in a
bounded LRU. An entry is served until the earliest of its time to live and the next change to
that task's row, whichever process made it:

- On PostgreSQL a trigger on ``tasks`` (migration 0019) sends ``NOTIFY scheduler_task_rows``
  with the task's id when the writing transaction commits — on every update that changes the row
  (an edit, a pause, the dispatcher's ``next_run_at``) and every delete — and every API process
  :meth:`forget`\\ s that id when it hears it. The process that made a change through
  :class:`~scheduler_application.tasks.service.TaskService` also forgets it at once after its
  commit, so its own next read never waits for the notification.
- While a process cannot hear the notifications (not yet subscribed, connection lost) it serves
  nothing from the cache (:meth:`suspend`, until :meth:`reset`). The time to live bounds what
  a notification lost any other way could cost.
- A read that missed stores its answer only if no invalidation happened while it read
  (:meth:`epoch`): a read that raced a change cannot bring the old row back.

What is *not* promised: between a commit in one process and another process hearing of it (a
millisecond on loopback) the other may still answer with the row before. That is the staleness
of a read replica a millisecond behind; a change made through a process is seen by that
process's next read at once. On SQLite (one embedded process, other processes may write the
file) the API keeps no such cache.

Visibility is not cached: the caller's right to see the task's team is checked on every read.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from scheduler_domain.task import Task

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_TTL = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class _Entry:
    task: Task
    #: ``monotonic()`` after which the entry is stale.
    stale_at: float


class TaskCache:
    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: timedelta = DEFAULT_TTL,
        live: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_entries`` or ``ttl`` of 0 turns caching off. ``live=False`` starts suspended
        (until :meth:`reset`): for a process that must first subscribe to the changes."""
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max(0, max_entries)
        self._ttl = max(0.0, ttl.total_seconds())
        self._live = live
        self._now = monotonic
        self._epoch = 0
        #: Reads answered from memory, for tests and metrics.
        self.hits = 0

    @property
    def enabled(self) -> bool:
        return self._live and self._max_entries > 0 and self._ttl > 0

    @property
    def epoch(self) -> int:
        """Take it before reading the database; hand it to :meth:`put`."""
        return self._epoch

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, task_id: str) -> Task | None:
        """A copy of the cached task (callers may change what they are given)."""
        if not self._live:
            return None
        entry = self._entries.get(task_id)
        if entry is None:
            return None
        if entry.stale_at <= self._now():
            del self._entries[task_id]
            return None
        self._entries.move_to_end(task_id)
        self.hits += 1
        return copy.copy(entry.task)

    def put(self, task: Task, *, epoch: int) -> None:
        """Remember ``task`` as read, unless an invalidation happened since ``epoch``."""
        if not self.enabled or epoch != self._epoch:
            return
        self._entries[task.id] = _Entry(copy.copy(task), self._now() + self._ttl)
        self._entries.move_to_end(task.id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget(self, task_ids: Iterable[str]) -> None:
        """These tasks changed (or are gone): drop them, and refuse the reads in flight."""
        self._epoch += 1
        for task_id in task_ids:
            self._entries.pop(task_id, None)

    def invalidate(self) -> None:
        """Forget every task."""
        self._epoch += 1
        self._entries.clear()

    def suspend(self) -> None:
        """Forget everything and serve nothing: changes may be missed from now on."""
        self._live = False
        self.invalidate()

    def reset(self) -> None:
        """Forget everything and serve again: changes are heard from now on."""
        self._live = True
        self.invalidate()
