"""Tasks as last read: bounded, short-lived, never bringing back a row that changed while it
was read, forgotten by the process's own changes at once, and no shortcut past visibility."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from application_fixtures import ALICE, BOB, OPERATOR, START, Gated, task_spec, until

from scheduler_application.errors import NotFound
from scheduler_application.tasks.read_cache import TaskCache
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.task import Task


class Ticker:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _task(name: str) -> Task:
    return Task(
        name=name,
        executor="noop",
        owner_id="alice",
        team_id="alice",
        created_at=START,
        updated_at=START,
    )


# -- the cache on its own -------------------------------------------------------------------


def test_the_cache_holds_at_most_its_size_dropping_the_least_recently_used() -> None:
    cache = TaskCache(max_entries=3)
    made = [_task(f"t{n}") for n in range(10)]
    for task in made[:3]:
        cache.put(task, epoch=cache.epoch)
    assert cache.get(made[0].id) is not None  # now the most recently used
    for task in made[3:]:
        cache.put(task, epoch=cache.epoch)
        assert len(cache) <= 3
    assert cache.get(made[1].id) is None
    assert cache.get(made[9].id) is not None


def test_an_entry_ends_with_its_time_to_live() -> None:
    ticker = Ticker()
    cache = TaskCache(ttl=timedelta(seconds=30), monotonic=ticker)
    task = _task("a")
    cache.put(task, epoch=cache.epoch)
    ticker.now += 29.9
    assert cache.get(task.id) is not None
    ticker.now += 0.2
    assert cache.get(task.id) is None


def test_a_read_that_raced_a_change_is_not_stored() -> None:
    cache = TaskCache()
    task = _task("a")
    epoch = cache.epoch  # the read starts
    cache.forget(["some-other-task"])  # a change is heard meanwhile
    cache.put(task, epoch=epoch)
    assert cache.get(task.id) is None
    cache.put(task, epoch=cache.epoch)
    assert cache.get(task.id) is not None


def test_forget_drops_the_named_tasks_only() -> None:
    cache = TaskCache()
    a, b = _task("a"), _task("b")
    for task in (a, b):
        cache.put(task, epoch=cache.epoch)
    cache.forget([a.id])
    assert cache.get(a.id) is None
    assert cache.get(b.id) is not None


def test_a_suspended_cache_serves_nothing_until_reset() -> None:
    cache = TaskCache(live=False)
    task = _task("a")
    cache.put(task, epoch=cache.epoch)
    assert not cache.enabled
    assert cache.get(task.id) is None
    cache.reset()
    cache.put(task, epoch=cache.epoch)
    assert cache.get(task.id) is not None
    cache.suspend()
    assert cache.get(task.id) is None
    assert len(cache) == 0


def test_what_a_caller_is_given_is_its_own_copy() -> None:
    cache = TaskCache()
    task = _task("a")
    cache.put(task, epoch=cache.epoch)
    task.description = "changed after it was stored"
    given = cache.get(task.id)
    assert given is not None
    assert given.description == ""
    given.description = "changed by a caller"
    again = cache.get(task.id)
    assert again is not None
    assert again.description == ""


@pytest.mark.parametrize(("size", "seconds"), [(0, 30.0), (10, 0.0)])
def test_size_or_time_to_live_of_zero_turns_it_off(size: int, seconds: float) -> None:
    cache = TaskCache(max_entries=size, ttl=timedelta(seconds=seconds))
    task = _task("a")
    cache.put(task, epoch=cache.epoch)
    assert cache.get(task.id) is None


# -- through the task service ---------------------------------------------------------------


@pytest.fixture
def cache() -> TaskCache:
    return TaskCache()


@pytest.fixture
def cached_tasks(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, cache: TaskCache
) -> TaskService:
    return TaskService(
        uow_factory=uow_factory,
        clock=clock,
        executor_policy=OPEN_EXECUTOR_POLICY,
        task_cache=cache,
    )


def _change_behind_its_back(store: InMemoryStore, task_id: str, description: str) -> None:
    """Another process's write: the store changes, this process's cache is not told."""
    row = store.row("tasks", task_id)
    store.put("tasks", replace(row, description=description))


async def test_a_read_task_is_served_from_memory_until_its_change_is_heard(
    cached_tasks: TaskService, cache: TaskCache, store: InMemoryStore
) -> None:
    task = await cached_tasks.create(task_spec(), principal=ALICE)
    await cached_tasks.get(task.id, principal=ALICE)
    _change_behind_its_back(store, task.id, "written by another process")
    hits = cache.hits
    served = await cached_tasks.get(task.id, principal=ALICE)
    assert cache.hits == hits + 1
    assert served.description == task.description
    cache.forget([task.id])  # the notification arrives
    assert (await cached_tasks.get(task.id, principal=ALICE)).description == (
        "written by another process"
    )


async def test_the_process_own_changes_are_seen_by_its_next_read_at_once(
    cached_tasks: TaskService, cache: TaskCache
) -> None:
    task = await cached_tasks.create(task_spec(), principal=ALICE)
    await cached_tasks.get(task.id, principal=ALICE)
    await cached_tasks.update(task.id, {"description": "edited"}, principal=ALICE)
    assert (await cached_tasks.get(task.id, principal=ALICE)).description == "edited"
    await cached_tasks.pause(task.id, principal=ALICE)
    assert (await cached_tasks.get(task.id, principal=ALICE)).paused
    await cached_tasks.resume(task.id, principal=ALICE)
    assert not (await cached_tasks.get(task.id, principal=ALICE)).paused
    await cached_tasks.delete(task.id, principal=ALICE)
    with pytest.raises(NotFound):
        await cached_tasks.get(task.id, principal=ALICE)


async def test_a_cached_task_is_still_hidden_from_those_who_may_not_see_it(
    cached_tasks: TaskService, cache: TaskCache
) -> None:
    task = await cached_tasks.create(task_spec(), principal=ALICE)
    await cached_tasks.get(task.id, principal=ALICE)
    assert cache.get(task.id) is not None
    with pytest.raises(NotFound):
        await cached_tasks.get(task.id, principal=BOB)
    assert (await cached_tasks.get(task.id, principal=OPERATOR)).id == task.id


async def test_a_missing_task_is_never_remembered(
    cached_tasks: TaskService, cache: TaskCache
) -> None:
    with pytest.raises(NotFound):
        await cached_tasks.get("no-such-task", principal=ALICE)
    assert len(cache) == 0


async def test_concurrent_misses_share_one_read_and_each_caller_its_own_copy_and_check(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, store: InMemoryStore
) -> None:
    cache = TaskCache()
    reads = Gated(store)
    tasks = TaskService(
        uow_factory=uow_factory,
        read_uow_factory=reads,
        clock=clock,
        executor_policy=OPEN_EXECUTOR_POLICY,
        task_cache=cache,
    )
    task = await tasks.create(task_spec(), principal=ALICE)
    readers = [ALICE] * 6 + [BOB] * 2
    gets = [asyncio.create_task(tasks.get(task.id, principal=who)) for who in readers]
    await until(lambda: reads.begun == 1)
    reads.gate.set()
    answers = await asyncio.gather(*gets, return_exceptions=True)
    assert reads.begun == 1
    seen = [a for a in answers if isinstance(a, Task)]
    assert len(seen) == 6
    assert all(a.id == task.id for a in seen)
    assert len({id(a) for a in seen}) == 6  # nobody shares an object another may change
    assert [type(a) for a in answers[6:]] == [NotFound, NotFound]  # visibility per caller


# -- an answer's view of a cached task -------------------------------------------------------


class CountingRender:
    """A renderer that counts its calls (what the API's ``TaskOut.of`` does per call)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, task: Task) -> tuple[str, str]:
        self.calls += 1
        return task.id, task.description


async def test_a_cached_task_is_rendered_once_for_every_caller_until_it_changes(
    cached_tasks: TaskService, cache: TaskCache
) -> None:
    render = CountingRender()
    task = await cached_tasks.create(task_spec(), principal=ALICE)
    first = await cached_tasks.show(task.id, principal=ALICE, render=render)
    assert first == (task.id, task.description)
    for _ in range(5):
        assert await cached_tasks.show(task.id, principal=OPERATOR, render=render) == first
    assert render.calls == 2  # the read that missed, then once into the cached entry
    await cached_tasks.update(task.id, {"description": "edited"}, principal=ALICE)
    assert await cached_tasks.show(task.id, principal=ALICE, render=render) == (task.id, "edited")
    cache.forget([task.id])  # a change heard from another process: rendered afresh too
    await cached_tasks.show(task.id, principal=ALICE, render=render)
    calls = render.calls
    await cached_tasks.show(task.id, principal=ALICE, render=render)
    assert render.calls == calls + 1  # into the new entry, then no more
    await cached_tasks.show(task.id, principal=ALICE, render=render)
    assert render.calls == calls + 1


async def test_a_rendered_task_is_still_hidden_from_those_who_may_not_see_it(
    cached_tasks: TaskService, cache: TaskCache
) -> None:
    render = CountingRender()
    task = await cached_tasks.create(task_spec(), principal=ALICE)
    for _ in range(2):
        await cached_tasks.show(task.id, principal=ALICE, render=render)
    assert cache.shown(task.id, render) is not None  # the view is there to be served…
    with pytest.raises(NotFound):  # …but not to Bob
        await cached_tasks.show(task.id, principal=BOB, render=render)
    with pytest.raises(NotFound):
        await cached_tasks.show("no-such-task", principal=ALICE, render=render)


async def test_without_a_cache_a_task_is_rendered_for_each_caller(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, store: InMemoryStore
) -> None:
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    render = CountingRender()
    task = await tasks.create(task_spec(), principal=ALICE)
    for _ in range(3):
        await tasks.show(task.id, principal=ALICE, render=render)
    _change_behind_its_back(store, task.id, "written by another process")
    assert await tasks.show(task.id, principal=ALICE, render=render) == (
        task.id,
        "written by another process",
    )
    assert render.calls == 4
    with pytest.raises(NotFound):
        await tasks.show(task.id, principal=BOB, render=render)
