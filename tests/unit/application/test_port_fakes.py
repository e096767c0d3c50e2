from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from application_fixtures import START

from recording_queue import InMemoryRunQueue
from scheduler_application.errors import AuthenticationFailed, Unavailable
from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_application.ports.queue import RunMessage
from scheduler_application.testing import (
    FakeClock,
    FakeExecutor,
    FakePasswordHasher,
    FakeTokenCodec,
    InMemoryLeaseStore,
    InMemoryRateLimiter,
)
from scheduler_domain.rate_limit import RateLimit


def message(run_id: str, priority: int = 5, queue: str = "default") -> RunMessage:
    return RunMessage(
        run_id=run_id,
        task_id="t",
        attempt=1,
        token=1,
        queue=queue,
        priority=priority,
        enqueued_at=START,
    )


def test_fake_clock_advances_and_jumps() -> None:
    clock = FakeClock(START)
    assert clock.advance(seconds=5) == START + timedelta(seconds=5)
    assert clock.advance(timedelta(minutes=1)) == START + timedelta(seconds=65)
    assert clock.set(START) == START
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(seconds=-1)


async def test_queue_delivers_higher_priority_first_then_in_publish_order() -> None:
    queue = InMemoryRunQueue()
    await queue.publish_many([message("a", 1), message("b", 9), message("c", 9), message("d", 5)])
    taken = [queue.get_nowait(["default"]) for _ in range(4)]
    assert [d.message.run_id for d in taken if d] == ["b", "c", "d", "a"]
    assert [m.run_id for m in queue.published] == ["a", "b", "c", "d"]


async def test_queue_nack_with_requeue_redelivers_and_ack_forgets() -> None:
    queue = InMemoryRunQueue()
    await queue.publish(message("a"))
    first = queue.get_nowait(["default"])
    assert first is not None
    assert not first.redelivered
    await queue.nack(first, requeue=True)
    again = queue.get_nowait(["default"])
    assert again is not None
    assert again.redelivered
    await queue.ack(again)
    assert await queue.depth("default") == 0
    assert queue.acked == [again.message]
    assert queue.unacked == []
    with pytest.raises(ValueError, match="not outstanding"):
        await queue.ack(again)


async def test_queue_consumer_respects_prefetch_and_redelivers_when_it_dies() -> None:
    queue = InMemoryRunQueue()
    await queue.publish_many([message("a"), message("b")])
    consumer = queue.consume(["default"], prefetch=1)
    first = await anext(consumer)
    blocked = asyncio.ensure_future(anext(consumer))
    await asyncio.sleep(0)
    assert not blocked.done()  # prefetch 1: the second waits for the first's ack
    await queue.ack(first)
    second = await asyncio.wait_for(blocked, 1)
    assert second.message.run_id == "b"
    await consumer.aclose()  # dies with "b" unacked
    redelivered = queue.get_nowait(["default"])
    assert redelivered is not None
    assert redelivered.redelivered
    assert redelivered.message.run_id == "b"


async def test_queue_consumer_wakes_up_on_publish() -> None:
    queue = InMemoryRunQueue()
    consumer = queue.consume(["default"], prefetch=2)
    waiting = asyncio.ensure_future(anext(consumer))
    await asyncio.sleep(0)
    await queue.publish(message("late"))
    delivery = await asyncio.wait_for(waiting, 1)
    assert delivery.message.run_id == "late"
    await consumer.aclose()


async def test_unavailable_queue_refuses_to_publish() -> None:
    queue = InMemoryRunQueue()
    queue.unavailable = True
    with pytest.raises(Unavailable):
        await queue.publish(message("a"))
    assert queue.published == []


async def test_rate_limiter_grants_a_burst_then_says_how_long_to_wait() -> None:
    limiter = InMemoryRateLimiter()
    limit = RateLimit.parse("2/10s")
    assert await limiter.acquire("k", limit, now=START) == timedelta(0)
    assert await limiter.acquire("k", limit, now=START) == timedelta(0)
    wait = await limiter.acquire("k", limit, now=START)
    assert wait == timedelta(seconds=5)
    assert await limiter.acquire("k", limit, now=START + wait) == timedelta(0)
    assert await limiter.acquire("other", limit, now=START) == timedelta(0)
    assert limiter.delayed == [("k", timedelta(seconds=5))]


async def test_lease_store_gives_a_resource_to_one_holder_until_it_expires() -> None:
    leases = InMemoryLeaseStore()
    ttl = timedelta(seconds=10)
    assert await leases.try_acquire("reaper", holder="a", ttl=ttl, now=START)
    assert not await leases.try_acquire("reaper", holder="b", ttl=ttl, now=START)
    assert await leases.try_acquire("reaper", holder="a", ttl=ttl, now=START)  # renew
    assert await leases.try_acquire("reaper", holder="b", ttl=ttl, now=START + ttl)
    await leases.release("reaper", holder="a")  # not the holder any more: no effect
    assert leases.leases["reaper"].holder == "b"
    await leases.release("reaper", holder="b")
    assert "reaper" not in leases.leases


def test_fake_password_hasher_is_deterministic_and_verifies() -> None:
    hasher = FakePasswordHasher()
    digest = hasher.hash("correct horse battery")
    assert digest == hasher.hash("correct horse battery")
    assert "correct horse" not in digest
    assert hasher.verify(digest, "correct horse battery")
    assert not hasher.verify(digest, "wrong")
    assert not hasher.verify("garbage", "wrong")
    assert hasher.needs_rehash("$argon2id$...")
    assert not hasher.needs_rehash(digest)


def test_fake_token_codec_checks_type_signature_and_expiry() -> None:
    clock = FakeClock(START)
    codec = FakeTokenCodec(clock)
    token = codec.encode({"sub": "alice"}, token_type="access", ttl=timedelta(minutes=15))
    assert codec.decode(token, token_type="access")["sub"] == "alice"
    with pytest.raises(AuthenticationFailed):
        codec.decode(token, token_type="refresh")
    with pytest.raises(AuthenticationFailed):
        codec.decode(token[:-2] + "xx", token_type="access")
    with pytest.raises(AuthenticationFailed):
        FakeTokenCodec(clock, secret="other").decode(token, token_type="access")
    clock.advance(timedelta(minutes=15))
    with pytest.raises(AuthenticationFailed, match="expired"):
        codec.decode(token, token_type="access")


async def test_fake_executor_records_contexts_and_computes_results() -> None:
    context = ExecutionContext(run_id="r", task_id="t", attempt=1, params={"x": 1})
    fixed = FakeExecutor("noop")
    assert (await fixed.execute(context)).status == "succeeded"

    async def failing(ctx: ExecutionContext) -> ExecutionResult:
        return ExecutionResult(status="failed", error=f"attempt {ctx.attempt} failed")

    computed = FakeExecutor("shell", failing)
    assert (await computed.execute(context)).error == "attempt 1 failed"
    assert computed.contexts == [context]
