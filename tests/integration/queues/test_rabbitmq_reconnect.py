"""RabbitMQ specifics: the robust connection brings consumers back after the broker drops every
connection or restarts, and acks for deliveries of the lost channel do no harm.

These tests disturb the broker for everybody on it (``close_all_connections``, ``stop_app``);
a ``finally`` always leaves the app started and answering.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from queue_helpers import (
    QueueMaker,
    next_delivery,
    publish_eventually,
    run_message,
)

from integration_support_rabbitmq import rabbitmqctl, wait_until_answering
from scheduler_application.errors import Unavailable
from scheduler_application.ports.queue import Delivery
from services import require, require_service

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
async def broker_control() -> AsyncIterator[None]:
    """Needs ``rabbitmqctl``; whatever happens, leaves the app running and answering."""
    await require_service("rabbitmq")
    require("rabbitmqctl", None if shutil.which("rabbitmqctl") else "not on PATH")
    try:
        yield
    finally:
        await rabbitmqctl("start_app")
        await wait_until_answering()


async def _receive(consumer: object, count: int) -> dict[str, Delivery]:
    received: dict[str, Delivery] = {}
    while len(received) < count:
        delivery = await next_delivery(consumer, within=30)
        received[delivery.message.run_id] = delivery
    return received


@pytest.mark.usefixtures("broker_control")
async def test_consumer_resumes_after_the_broker_closes_every_connection(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue()
    name = new_queue_name()
    async with queue.consume([name], prefetch=5) as consumer:
        before = run_message(name, number=1)
        await queue.publish(before)
        held = await next_delivery(consumer)  # not acked when the connection drops

        await rabbitmqctl("close_all_connections", "scheduler queue reconnect test")
        after = run_message(name, number=2)
        await publish_eventually(queue, after)
        await queue.ack(held)  # its channel is gone: ignored, and the broker redelivers it

        received = await _receive(consumer, 2)
        assert received[before.run_id].redelivered
        assert not received[after.run_id].redelivered
        for delivery in received.values():
            await queue.ack(delivery)
    assert await queue.depth(name) == 0


@pytest.mark.usefixtures("broker_control")
async def test_consumer_resumes_after_the_broker_restarts(
    make_queue: QueueMaker, new_queue_name
) -> None:
    queue = await make_queue(operation_timeout=3.0)
    name = new_queue_name()
    async with queue.consume([name], prefetch=1) as consumer:
        await queue.publish(run_message(name, number=1))
        await queue.ack(await next_delivery(consumer))

        try:
            await rabbitmqctl("stop_app")
            with pytest.raises(Unavailable):
                await queue.publish(run_message(name, number=2))
        finally:
            await rabbitmqctl("start_app")
            await wait_until_answering()

        after = run_message(name, number=3)
        await publish_eventually(queue, after, within=60)
        received = await _receive(consumer, 1)
        assert list(received) == [after.run_id]
        await queue.ack(received[after.run_id])
