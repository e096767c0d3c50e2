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


async def _turn() -> None:
    """Let every ready task run (a few passes of the loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _one_group_then_three_behind(
    follow: bool,
) -> tuple[Recorder, Ticks, GroupCommit[int, int], list[asyncio.Future[int]]]:
    """Item 0 flushed alone and held; 2, 4 and 6 submitted meanwhile; then that flush ends
    (40 ms by the clock) and 0 is answered."""
    recorder = Recorder()
    recorder.release.clear()
    ticks = Ticks()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush, follow_last=follow, clock=ticks)
    futures = [asyncio.ensure_future(batcher.submit(0))]
    await _turn()
    futures += [asyncio.ensure_future(batcher.submit(i)) for i in (2, 4, 6)]
    await _turn()
    assert recorder.batches == [[0]]
    ticks.now += 0.04
    recorder.release.set()
    assert await asyncio.wait_for(futures[0], timeout=1) == 0
    return recorder, ticks, batcher, futures


async def _the_caller_of_0_comes_back(
    batcher: GroupCommit[int, int], futures: list[asyncio.Future[int]]
) -> list[int]:
    """Submit 8 (the answered caller's next item): the answers of 2, 4, 6 and 8."""
    came_back = asyncio.ensure_future(batcher.submit(8))
    return await asyncio.wait_for(asyncio.gather(*futures[1:], came_back), timeout=1)


async def test_callers_coming_back_together_share_a_flush_when_following_the_last_group() -> None:
    """A fixed set of callers (the API's clients): when 0 is answered its caller comes back
    at once. Without ``follow_last`` the three that waited go without it, and it goes alone
    after them; with it, the four go together."""
    recorder, _, batcher, futures = await _one_group_then_three_behind(follow=False)
    assert await _the_caller_of_0_comes_back(batcher, futures) == [20, 40, 60, 80]
    assert recorder.batches == [[0], [2, 4, 6], [8]]

    recorder, _, batcher, futures = await _one_group_then_three_behind(follow=True)
    assert recorder.batches == [[0]]  # 2, 4, 6 wait for a fourth: the last flush had four
    assert await _the_caller_of_0_comes_back(batcher, futures) == [20, 40, 60, 80]
    assert recorder.batches == [[0], [2, 4, 6, 8]]
    assert batcher.waits == 1


async def test_a_group_following_the_last_one_waits_no_longer_than_that_flush_took() -> None:
    recorder, _, batcher, futures = await _one_group_then_three_behind(follow=True)
    await _turn()
    assert recorder.batches == [[0]]  # waiting for the caller of 0, who does not come
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(asyncio.gather(*futures[1:]), timeout=1) == [20, 40, 60]
    # At most the last flush's 40 ms (by the test's clock; the loop's timer is the bound).
    assert loop.time() - started < 0.5
    assert recorder.batches == [[0], [2, 4, 6]]
    assert batcher.waits == 1


async def test_following_the_last_group_an_item_after_a_lone_one_or_a_pause_goes_at_once() -> None:
    recorder = Recorder()
    ticks = Ticks()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.flush, follow_last=True, clock=ticks)
    for i in (0, 2, 4):  # light load: each flush carried one item, nothing came meanwhile
        ticks.now += 0.01
        assert await asyncio.wait_for(batcher.submit(i), timeout=1) == i * 10
    assert recorder.batches == [[0], [2], [4]]
    assert batcher.waits == 0
    # A group of four, then a pause longer than its flush took: the next item goes at once.
    recorder, ticks, batcher, futures = await _one_group_then_three_behind(follow=True)
    recorder.release.clear()
    futures.append(asyncio.ensure_future(batcher.submit(8)))
    await _turn()
    assert recorder.batches == [[0], [2, 4, 6, 8]]
    ticks.now += 0.04  # this flush takes 40 ms too
    recorder.release.set()
    await asyncio.wait_for(asyncio.gather(*futures[1:]), timeout=1)
    ticks.now += 1.0
    recorder.release.clear()
    alone = asyncio.ensure_future(batcher.submit(10))
    await _turn()
    assert recorder.batches[-1] == [10]  # flushed (and held) without waiting for company
    recorder.release.set()
    assert await asyncio.wait_for(alone, timeout=1) == 100
    assert batcher.waits == 1  # only the group of four waited
