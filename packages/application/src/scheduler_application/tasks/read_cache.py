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

A cached task also keeps what it was rendered into (:meth:`TaskCache.shown`: the API's answer
for ``GET /tasks/{id}``), so that a task served from memory is not converted again for every
request; the rendering goes with the entry when the task changes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from scheduler_application.live_cache import LiveCache
from scheduler_domain.task import Task

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_TTL = timedelta(seconds=30)

T = TypeVar("T")


@dataclass(slots=True)
class _Cached:
    #: The cache's own copy: never handed out, so never changed.
    task: Task
    #: What the task was rendered into, by renderer.
    views: dict[Callable[[Task], Any], Any] = field(default_factory=dict)


class TaskCache(LiveCache[_Cached]):
    DEFAULT_MAX_ENTRIES = DEFAULT_MAX_ENTRIES
    DEFAULT_TTL = DEFAULT_TTL

    def get(self, task_id: str) -> Task | None:
        """A copy of the cached task (callers may change what they are given)."""
        cached = self._lookup(task_id)
        if cached is None:
            return None
        self.hits += 1
        return copy.copy(cached.task)

    def shown(self, task_id: str, render: Callable[[Task], T]) -> tuple[str, T] | None:
        """The cached task's team and ``render(task)``, rendered once per entry: ``render``
        must be a pure function of the task that changes nothing (an answer's view of it)."""
        cached = self._lookup(task_id)
        if cached is None:
            return None
        self.hits += 1
        view: T | None = cached.views.get(render)
        if view is None:
            view = cached.views[render] = render(cached.task)
        return cached.task.team_id, view

    def put(self, task: Task, *, epoch: int) -> None:
        """Remember ``task`` as read, unless an invalidation happened since ``epoch``."""
        self._store(task.id, _Cached(copy.copy(task)), epoch=epoch)
