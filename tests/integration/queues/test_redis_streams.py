"""Redis Streams specifics: taking over a dead consumer's entries, the delivery limit, unreadable
entries, and recovering from killed client connections."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from queue_helpers import (
    VISIBILITY_TIMEOUT,
    QueueMaker,
    assert_no_delivery,
    next_delivery,
    publish_eventually,
    run_message,
)

from scheduler_infrastructure.queues.redis_streams import GROUP
from services import REDIS_URL, require_service

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    await require_service("redis")
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def _create_group(client: aioredis.Redis, key: str) -> None:
    try:
        await client.xgroup_create(key, GROUP, id="0", mkstream=True)
    except aioredis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


async def test_entries_pending_on_a_dead_consumer_are_claimed(
    make_queue: QueueMaker, new_queue_name, redis_client: aioredis.Redis
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    sent = [run_message(name, number=n) for n in range(3)]
    await queue.publish_many(sent)
    key = queue.band_key(name, 0)
    await _create_group(redis_client, key)
    # A consumer reads the entries and dies: they stay pending on it.
    await redis_client.xreadgroup(GROUP, "dead-consumer", {key: ">"}, count=10)
    assert (await redis_client.xpending(key, GROUP))["pending"] == 3

    async with queue.consume([name], prefetch=5) as consumer:
        claimed = [await next_delivery(consumer, within=VISIBILITY_TIMEOUT + 10) for _ in sent]
        assert sorted(d.message.run_id for d in claimed) == sorted(m.run_id for m in sent)
        assert all(delivery.redelivered for delivery in claimed)
        pending = await redis_client.xpending_range(key, GROUP, "-", "+", 10)
        owners = {row["consumer"] for row in pending}
        assert owners == {consumer.name.encode()}
        for delivery in claimed:
            await queue.ack(delivery)

    assert (await redis_client.xpending(key, GROUP))["pending"] == 0
    assert await redis_client.xlen(key) == 0


async def test_entry_delivered_too_often_is_dead_lettered(
    make_queue: QueueMaker, new_queue_name, redis_client: aioredis.Redis
) -> None:
    queue = await make_queue(max_deliveries=2)
    name = new_queue_name()
    message = run_message(name)
    await queue.publish(message)
    key = queue.band_key(name, 0)
    await _create_group(redis_client, key)
    await redis_client.xreadgroup(GROUP, "dead-consumer", {key: ">"}, count=10)  # delivery 1

    async with queue.consume([name], prefetch=1) as second:
        delivery = await next_delivery(second, within=VISIBILITY_TIMEOUT + 10)  # delivery 2
        assert delivery.redelivered
    async with queue.consume([name], prefetch=1) as third:
        # Delivery 3 would exceed the limit: the entry goes to the dead-letter stream instead.
        await assert_no_delivery(third, within=VISIBILITY_TIMEOUT * 4)

    assert [dead.run_id for dead in await queue.dead_letters(name)] == [message.run_id]
    [(_, fields)] = await redis_client.xrange(queue.dead_letter_key(name))
    assert fields[b"reason"] == b"delivery limit reached"
    assert fields[b"deliveries"] == b"3"
    assert await redis_client.xlen(key) == 0
    assert (await redis_client.xpending(key, GROUP))["pending"] == 0


async def test_unreadable_entry_is_dead_lettered_not_delivered(
    make_queue: QueueMaker, new_queue_name, redis_client: aioredis.Redis
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    await redis_client.xadd(queue.band_key(name, 9), {b"m": b"\x93not a run message"})
    readable = run_message(name)
    await queue.publish(readable)

    async with queue.consume([name], prefetch=2) as consumer:
        delivery = await next_delivery(consumer)
        assert delivery.message.run_id == readable.run_id
        await queue.ack(delivery)
        await assert_no_delivery(consumer, within=0.5)

    [(_, fields)] = await redis_client.xrange(queue.dead_letter_key(name))
    assert fields[b"reason"] == b"unreadable"


async def test_consumer_recovers_after_its_connections_are_killed(
    make_queue: QueueMaker, new_queue_name, redis_client: aioredis.Redis
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    async with queue.consume([name], prefetch=1) as consumer:
        first = run_message(name, number=1)
        await queue.publish(first)
        await queue.ack(await next_delivery(consumer))

        # Every normal client connection but this one (CLIENT KILL skips the caller).
        killed = await redis_client.execute_command("CLIENT", "KILL", "TYPE", "normal")
        assert int(killed) >= 1

        second = run_message(name, number=2)
        await publish_eventually(queue, second)
        delivery = await next_delivery(consumer, within=20)
        assert delivery.message.run_id == second.run_id
        await queue.ack(delivery)
    assert await queue.depth(name) == 0
