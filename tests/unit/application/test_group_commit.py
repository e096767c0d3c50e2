"""Group commit: callers waiting together share one flush, each gets its answer."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from scheduler_application.group_commit import GroupCommit, answer_alike


class Recorder:
    def __init__(self, *, fail: BaseException | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def flush(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_an_item_alone_is_flushed_at_once() -> None:
    recorder = Recorder()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush)
    assert await asyncio.wait_for(batcher.submit(2), timeout=1) == 20
    assert recorder.batches == [[2]]


async def test_items_arriving_during_a_flush_share_the_next_one() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first flush is under way, waiting
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 4, 6)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await asyncio.gather(first, *rest) == [0, 20, 40, 60]
    assert recorder.batches == [[0], [2, 4, 6]]
    assert (batcher.flushes, batcher.items) == (2, 4)


async def test_each_caller_gets_its_own_answer_or_error() -> None:
    batcher: GroupCommit[int, int] = GroupCommit(Recorder().flush)
    answers = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert answers[0] == 0
    assert answers[2] == 20
    assert isinstance(answers[1], ValueError)
    assert isinstance(answers[3], ValueError)


async def test_a_failed_flush_fails_every_caller_in_it_and_the_next_flush_still_runs() -> None:
    recorder = Recorder(fail=ConnectionError("database went away"))
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush)
    results = await asyncio.gather(batcher.submit(2), batcher.submit(4), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    recorder.fail = None
    assert await batcher.submit(6) == 60


async def test_batches_are_capped() -> None:
    recorder = Recorder()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush, max_batch=2)
    await asyncio.gather(*(batcher.submit(i) for i in (0, 2, 4, 6, 8)))
    assert [len(batch) for batch in recorder.batches] == [2, 2, 1]
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(recorder.flush, max_batch=0)


async def test_a_cancelled_caller_does_not_break_the_flush_for_the_others() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush)
    leaving = asyncio.ensure_future(batcher.submit(2))
    staying = asyncio.ensure_future(batcher.submit(4))
    await asyncio.sleep(0)
    leaving.cancel()
    recorder.release.set()
    assert await staying == 40
    with pytest.raises(asyncio.CancelledError):
        await leaving
    await batcher.aclose()


async def test_flushes_run_in_the_batchers_own_context_not_a_callers() -> None:
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    seen: list[str] = []

    async def flush(items: list[int]) -> list[int]:
        seen.append(who.get())
        return items

    who.set("worker")
    batcher: GroupCommit[int, int] = GroupCommit(flush)

    async def caller() -> int:
        who.set("one run")
        return await batcher.submit(1)

    assert await asyncio.create_task(caller()) == 1
    assert seen == ["worker"]


async def test_a_flush_without_answers_answers_every_item_alike() -> None:
    sent: list[list[int]] = []
    broken = False

    async def send(items: list[int]) -> None:
        sent.append(items)
        if broken:
            raise ConnectionError("broker went away")

    group: GroupCommit[int, None] = GroupCommit(answer_alike(send))
    assert await asyncio.gather(group.submit(1), group.submit(2)) == [None, None]
    assert sent == [[1, 2]]
    broken = True
    failed = await asyncio.gather(group.submit(3), group.submit(4), return_exceptions=True)
    assert all(isinstance(answer, ConnectionError) for answer in failed)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_steady_flow_waits_a_window_and_gathers_items_arriving_one_by_one() -> None:
    recorder = Recorder()
    ticks = Ticks()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush, window=0.05, clock=ticks)
    for i in (0, 2):  # one item every 10 ms: several per 50 ms window
        assert await asyncio.wait_for(batcher.submit(i), timeout=1) == i * 10
        ticks.now += 0.01
    first = asyncio.ensure_future(batcher.submit(4))
    await asyncio.sleep(0.005)  # the flush has not gone: it waits for companions
    assert recorder.batches[-1] == [2]
    ticks.now += 0.01
    second = asyncio.ensure_future(batcher.submit(6))
    assert await asyncio.gather(first, second) == [40, 60]
    assert recorder.batches[-1] == [4, 6]
    assert batcher.waits >= 1


async def test_a_slow_flow_or_an_idle_process_flushes_at_once_with_a_window() -> None:
    recorder = Recorder()
    ticks = Ticks()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush, window=0.05, clock=ticks)
    loop = asyncio.get_running_loop()
    for i in range(4):  # the first alone; then one every 500 ms: far slower than the window
        started = loop.time()
        assert await batcher.submit(i * 2) == i * 20
        assert loop.time() - started < 0.04
        ticks.now += 0.5
    assert batcher.waits == 0
    for i in range(4):  # a fast flow, then a pause: the first item after it goes at once
        await batcher.submit(i * 2)
        ticks.now += 0.001
    ticks.now += 5.0
    started = loop.time()
    await batcher.submit(8)
    assert loop.time() - started < 0.04


async def test_a_window_ends_early_when_the_batch_is_full() -> None:
    recorder = Recorder()
    ticks = Ticks()
    batcher: GroupCommit[int, int] = GroupCommit(
        recorder.flush, max_batch=2, window=0.05, clock=ticks
    )
    for i in range(3):  # a fast flow: groups wait for companions
        await batcher.submit(i * 2)
        ticks.now += 0.001
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(batcher.submit(10))
    await asyncio.sleep(0.005)
    started = loop.time()
    assert await asyncio.gather(first, batcher.submit(12)) == [100, 120]
    assert loop.time() - started < 0.04  # the second filled the batch: no wait for the rest
    assert recorder.batches[-1] == [10, 12]
    with pytest.raises(ValueError, match="window"):
        GroupCommit(recorder.flush, window=0.5)


async def test_a_flow_of_one_item_per_few_windows_still_waits_for_companions() -> None:
    recorder = Recorder()
    ticks = Ticks()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush, window=0.02, clock=ticks)
    for i in range(3):  # one every three windows: a wait gathers a third of an item on average
        await batcher.submit(i * 2)
        ticks.now += 0.06
    assert batcher.waits >= 1
