"""The ``RunQueue`` contract, run unchanged against every backend.

Backend set-up lives in the fixtures (``conftest.py``); nothing here knows which backend runs.
Postgres and Redis redeliver a dead consumer's messages after their visibility timeout (1 s in
these tests); memory and RabbitMQ at once. Closing a consumer without acking counts as dying.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from queue_helpers import (
    VISIBILITY_TIMEOUT,
    QueueMaker,
    assert_no_delivery,
    eventually,
    next_delivery,
    run_message,
)

from scheduler_application.ports.queue import RunMessage

pytestmark = [pytest.mark.usefixtures("backend"), pytest.mark.timeout(60)]

#: Long enough for a wrong redelivery to show up on every backend.
QUIET = VISIBILITY_TIMEOUT + 1.0


async def test_published_message_is_delivered_once_and_acked(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    message = run_message(name)

    await queue.publish(message)
    async with queue.consume([name], prefetch=1) as consumer:
        delivery = await next_delivery(consumer)
        assert delivery.message == message
        assert delivery.redelivered is False
        await queue.ack(delivery)
        await assert_no_delivery(consumer, within=QUIET)
    assert await queue.depth(name) == 0


async def test_publish_many_delivers_every_message(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    name = new_queue_name()
    batch = [run_message(name, number=number) for number in range(50)]

    await queue.publish_many(batch)
    received: list[RunMessage] = []
    async with queue.consume([name], prefetch=10) as consumer:
        while len(received) < len(batch):
            delivery = await next_delivery(consumer)
            received.append(delivery.message)
            await queue.ack(delivery)
    assert sorted(m.run_id for m in received) == sorted(m.run_id for m in batch)
    assert await queue.depth(name) == 0


async def test_publish_many_of_nothing_is_a_no_op(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    await queue.publish_many([])
    assert await queue.depth(new_queue_name()) == 0


async def test_delivery_left_unacked_by_a_dead_consumer_is_redelivered(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    message = run_message(name)
    await queue.publish(message)

    dying = queue.consume([name], prefetch=1)
    first = await next_delivery(dying)
    assert first.message.run_id == message.run_id
    await dying.aclose()

    async with queue.consume([name], prefetch=1) as survivor:
        again = await next_delivery(survivor, within=VISIBILITY_TIMEOUT + 15)
        assert again.message == message
        assert again.redelivered is True
        await queue.ack(again)
        await assert_no_delivery(survivor, within=QUIET)


async def test_unacked_delivery_stays_with_its_live_consumer(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    await queue.publish(run_message(name))

    async with queue.consume([name], prefetch=1) as holder:
        delivery = await next_delivery(holder)
        async with queue.consume([name], prefetch=1) as other:
            # Well past the visibility timeout: a live consumer keeps what it holds.
            await assert_no_delivery(other, within=VISIBILITY_TIMEOUT * 3)
            await queue.ack(delivery)
            await assert_no_delivery(other, within=QUIET)


async def test_nack_with_requeue_delivers_again(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    name = new_queue_name()
    message = run_message(name)
    await queue.publish(message)

    async with queue.consume([name], prefetch=1) as consumer:
        first = await next_delivery(consumer)
        await queue.nack(first, requeue=True)
        again = await next_delivery(consumer)
        assert again.message == message
        assert again.redelivered is True
        await queue.ack(again)
    assert await queue.depth(name) == 0


async def test_nack_without_requeue_dead_letters(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    name = new_queue_name()
    message = run_message(name)
    await queue.publish(message)

    async with queue.consume([name], prefetch=1) as consumer:
        delivery = await next_delivery(consumer)
        await queue.nack(delivery, requeue=False)
        await assert_no_delivery(consumer, within=QUIET)
    assert await queue.depth(name) == 0

    async def dead_lettered() -> bool:
        return [dead.run_id for dead in await queue.dead_letters(name)] == [message.run_id]

    await eventually(dead_lettered, within=10)


async def test_higher_priority_is_delivered_first_then_fifo(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    low = run_message(name, priority=0, number=1)
    middle_first = run_message(name, priority=5, number=2)
    high = run_message(name, priority=9, number=3)
    middle_second = run_message(name, priority=5, number=4)
    for message in (low, middle_first, high, middle_second):
        await queue.publish(message)

    order = []
    async with queue.consume([name], prefetch=1) as consumer:
        for _ in range(4):
            delivery = await next_delivery(consumer)
            order.append(delivery.message.run_id)
            await queue.ack(delivery)
    assert order == [m.run_id for m in (high, middle_first, middle_second, low)]


async def test_consumer_only_sees_the_queues_it_asked_for(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    mine, theirs = new_queue_name(), new_queue_name()
    await queue.publish_many([run_message(theirs, number=n) for n in range(3)])
    ours = run_message(mine)
    await queue.publish(ours)

    async with queue.consume([mine], prefetch=5) as consumer:
        delivery = await next_delivery(consumer)
        assert delivery.message.run_id == ours.run_id
        await queue.ack(delivery)
        await assert_no_delivery(consumer, within=0.5)
    assert await queue.depth(theirs) == 3


async def test_one_consumer_can_read_several_queues(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    first, second = new_queue_name(), new_queue_name()
    sent = [run_message(first, number=1), run_message(second, number=2)]
    await queue.publish_many(sent)

    seen = set()
    async with queue.consume([first, second], prefetch=2) as consumer:
        for _ in sent:
            delivery = await next_delivery(consumer)
            seen.add(delivery.message.run_id)
            await queue.ack(delivery)
    assert seen == {message.run_id for message in sent}


async def test_prefetch_caps_unacked_deliveries(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    name = new_queue_name()
    await queue.publish_many([run_message(name, number=n) for n in range(5)])

    async with queue.consume([name], prefetch=2) as consumer:
        held = [await next_delivery(consumer), await next_delivery(consumer)]
        await assert_no_delivery(consumer, within=0.5)
        await queue.ack(held[0])
        third = await next_delivery(consumer)
        assert third.message.run_id not in {delivery.message.run_id for delivery in held}
        for delivery in (held[1], third):
            await queue.ack(delivery)


async def test_depth_counts_messages_waiting(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    name, other = new_queue_name(), new_queue_name()
    await queue.publish_many([run_message(name, priority=p, number=p) for p in (0, 4, 9)])

    assert await queue.depth(name) == 3
    assert await queue.depth(other) == 0
    async with queue.consume([name], prefetch=3) as consumer:
        for _ in range(3):
            await queue.ack(await next_delivery(consumer))
    assert await queue.depth(name) == 0


async def test_round_trip_keeps_every_field(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    name = new_queue_name()
    message = RunMessage(
        run_id="01JD7K8Z6V0000000000000000",
        task_id="task-42",
        attempt=3,
        token=17,
        queue=name,
        priority=7,
        enqueued_at=datetime(2026, 11, 22, 5, 36, 58, 422464, tzinfo=UTC),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    await queue.publish(message)
    async with queue.consume([name], prefetch=1) as consumer:
        delivery = await next_delivery(consumer)
        assert delivery.message == message
        await queue.ack(delivery)


async def test_closing_the_queue_ends_consumption(make_queue: QueueMaker, new_queue_name) -> None:
    queue = await make_queue()
    name = new_queue_name()
    consumer = queue.consume([name], prefetch=1)

    async def drain() -> int:
        return len([delivery async for delivery in consumer])

    draining = asyncio.create_task(drain())
    await asyncio.sleep(0.3)
    await queue.aclose()
    assert await asyncio.wait_for(draining, 10) == 0


async def test_an_empty_queue_is_deleted_and_can_be_used_again(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    message = run_message(name)
    await queue.publish(message)
    async with queue.consume([name], prefetch=1) as consumer:
        await queue.ack(await next_delivery(consumer))

    assert await queue.delete_if_empty(name) is True
    assert await queue.delete_if_empty(name) is True  # already gone: nothing to keep

    # A later publish declares it again (no stale "already declared" memory).
    await queue.publish(message)
    async with queue.consume([name], prefetch=1) as consumer:
        again = await next_delivery(consumer)
        assert again.message.run_id == message.run_id
        await queue.ack(again)


async def test_a_queue_holding_a_ready_message_is_kept_with_the_message(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    message = run_message(name)
    await queue.publish(message)

    assert await queue.delete_if_empty(name) is False

    async with queue.consume([name], prefetch=1) as consumer:
        delivery = await next_delivery(consumer)
        assert delivery.message == message
        await queue.ack(delivery)


async def test_a_queue_with_an_unacked_delivery_is_kept_until_it_is_settled(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    await queue.publish(run_message(name))

    async with queue.consume([name], prefetch=1) as consumer:
        delivery = await next_delivery(consumer)
        assert await queue.delete_if_empty(name) is False
        await queue.ack(delivery)

    async def deleted() -> bool:
        return await queue.delete_if_empty(name)

    await eventually(deleted, within=10)


async def test_a_queue_with_dead_letters_is_kept_with_them(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    message = run_message(name)
    await queue.publish(message)
    async with queue.consume([name], prefetch=1) as consumer:
        await queue.nack(await next_delivery(consumer), requeue=False)

    async def dead_lettered() -> bool:
        return [dead.run_id for dead in await queue.dead_letters(name)] == [message.run_id]

    await eventually(dead_lettered, within=10)
    assert await queue.delete_if_empty(name) is False
    assert [dead.run_id for dead in await queue.dead_letters(name)] == [message.run_id]
