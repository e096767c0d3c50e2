"""The webhook delivery loop on the in-memory fakes, with a fake clock: the retry schedule,
Retry-After, give-up after max_attempts, policy refusal at delivery time, the disabling rule's
time window, and the broker relay's position moving only after a confirmed publish."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler_application.accounts.access import Principal
from scheduler_application.errors import NotFound
from scheduler_application.events.log import record_event
from scheduler_application.events.topic import CONSUMER, EventTopicRelay
from scheduler_application.events.webhook_delivery import DeliverySettings, WebhookDispatcher
from scheduler_application.events.webhooks import WebhookService
from scheduler_application.ports.webhooks import SendResult
from scheduler_application.testing import FakeClock, InMemoryStore, InMemoryUnitOfWorkFactory
from scheduler_application.testing.webhooks import (
    InMemoryConsumerPositions,
    InMemoryWebhookStore,
    RecordingSender,
    RecordingTopic,
)
from scheduler_domain.accounts import Role, User
from scheduler_domain.events import LOG_START
from scheduler_domain.webhooks import DeliveryStatus, RetryPolicy

T0 = datetime(2030, 1, 1, tzinfo=UTC)
URL = "https://hooks.example.com/x"


class World:
    def __init__(self, sender: RecordingSender, settings: DeliverySettings) -> None:
        self.uow = InMemoryUnitOfWorkFactory(InMemoryStore())
        self.clock = FakeClock(T0)
        self.store = InMemoryWebhookStore(self.uow)
        self.sender = sender
        self.service = WebhookService(
            store=self.store, uow_factory=self.uow, sender=sender, clock=self.clock
        )
        self.dispatcher = WebhookDispatcher(
            store=self.store,
            uow_factory=self.uow,
            sender=sender,
            clock=self.clock,
            settings=settings,
        )
        self.owner = User(
            username="alice", password_hash="x", role=Role.USER, created_at=T0, updated_at=T0
        )
        self.principal = Principal(subject_id=self.owner.id, role=Role.USER)

    async def start(self) -> str:
        async with self.uow() as uow:
            await uow.users.add(self.owner)
            await uow.commit()
        created = await self.service.create(principal=self.principal, url=URL)
        return created.subscription.id

    async def event(self, n: int) -> None:
        async with self.uow() as uow:
            await record_event(
                uow, "thing.happened", at=self.clock.now(), actor="t",
                owner_id=self.owner.id, detail={"n": n},
            )  # fmt: skip
            await uow.commit()


def settings(**changes: object) -> DeliverySettings:
    base: dict[str, object] = {
        "retry": RetryPolicy(
            base_delay=timedelta(seconds=10),
            max_delay=timedelta(seconds=100),
            jitter=0,
            max_attempts=4,
        ),
        "disable_after_failures": 0,
    }
    return DeliverySettings(**{**base, **changes})  # type: ignore[arg-type]


async def test_backoff_doubles_and_the_event_is_given_up_after_max_attempts() -> None:
    world = World(RecordingSender(answer=lambda _n: SendResult(status_code=503, latency_ms=1)),
                  settings())  # fmt: skip
    hook = await world.start()
    await world.event(1)
    await world.event(2)
    waits = []
    for _ in range(3):
        await world.dispatcher.step()
        sub = world.store.subscriptions[hook]
        assert sub.next_attempt_at is not None
        waits.append((sub.next_attempt_at - world.clock.now()).total_seconds())
        assert not await world.dispatcher.step()  # not due yet: nothing sent
        world.clock.set(sub.next_attempt_at)
    assert waits == [10, 20, 40]
    assert len(world.sender.sent) == 3
    await world.dispatcher.step()  # the 4th attempt: given up; the next event is tried at once
    first, second = (s.headers["webhook-id"] for s in world.sender.sent[3:])
    assert first == world.sender.sent[0].headers["webhook-id"] != second
    log = await world.service.deliveries(hook, principal=world.principal)
    assert sorted((d.event_id == first, d.status, d.attempts) for d in log) == [
        (False, DeliveryStatus.RETRYING, 1),
        (True, DeliveryStatus.FAILED, 4),
    ]


async def test_retry_after_sets_the_next_attempt() -> None:
    answers = {1: SendResult(status_code=429, latency_ms=1, retry_after="37")}
    world = World(
        RecordingSender(answer=lambda n: answers.get(n, SendResult(status_code=200, latency_ms=1))),
        settings(),
    )
    hook = await world.start()
    await world.event(1)
    await world.dispatcher.step()
    assert world.store.subscriptions[hook].next_attempt_at == T0 + timedelta(seconds=37)


async def test_a_refused_destination_fails_at_once_without_sending() -> None:
    sender = RecordingSender()
    world = World(sender, settings())
    hook = await world.start()
    sender.refuse[URL] = "resolves to 10.0.0.5: private"
    await world.event(1)
    await world.dispatcher.step()
    assert sender.sent == []
    (delivery,) = await world.service.deliveries(hook, principal=world.principal)
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.last_error == "refused: resolves to 10.0.0.5: private"


async def test_disabling_waits_for_the_time_window_as_well_as_the_count() -> None:
    world = World(
        RecordingSender(answer=lambda _n: SendResult(status_code=None, latency_ms=1, error="x")),
        settings(
            retry=RetryPolicy(base_delay=timedelta(seconds=1), jitter=0, max_attempts=1000),
            disable_after_failures=3,
            disable_after=timedelta(hours=1),
        ),
    )
    hook = await world.start()
    await world.event(1)
    for _ in range(5):  # five failures within a few seconds: not yet
        await world.dispatcher.step()
        world.clock.advance(seconds=60)
    assert world.store.subscriptions[hook].enabled
    world.clock.advance(timedelta(hours=1))
    await world.dispatcher.step()
    assert not world.store.subscriptions[hook].enabled


async def test_an_owners_disable_during_a_delivery_holds() -> None:
    hook = ""

    def disable_meanwhile(_n: int) -> SendResult:
        current = world.store.subscriptions[hook]
        world.store.subscriptions[hook] = replace(current, enabled=False)
        return SendResult(status_code=200, latency_ms=1)

    world = World(RecordingSender(answer=disable_meanwhile), settings())
    hook = await world.start()
    await world.event(1)
    await world.dispatcher.step()
    assert len(world.sender.sent) == 1
    assert not world.store.subscriptions[hook].enabled
    assert world.store.subscriptions[hook].cursor != LOG_START  # the delivery was counted


async def test_someone_elses_webhook_is_not_found() -> None:
    world = World(RecordingSender(), settings())
    hook = await world.start()
    with pytest.raises(NotFound):
        await world.service.get(hook, principal=Principal(subject_id="bob", role=Role.USER))
    admin = Principal(subject_id="root", role=Role.ADMIN)
    assert (await world.service.get(hook, principal=admin)).id == hook


async def test_the_topic_position_moves_only_after_a_confirmed_publish() -> None:
    uow = InMemoryUnitOfWorkFactory(InMemoryStore())
    clock = FakeClock(T0)
    topic = RecordingTopic(fail=1)
    positions = InMemoryConsumerPositions()
    relay = EventTopicRelay(
        topic=topic, positions=positions, uow_factory=uow, clock=clock, start_at_head=False
    )
    async with uow() as tx:
        for n in range(3):
            await record_event(tx, "thing.happened", at=T0, actor="t", detail={"n": n})
        await tx.commit()
    with pytest.raises(ConnectionError):
        await relay.step()
    assert positions.positions[CONSUMER].seq == 0
    await relay.step()
    assert [e.detail["n"] for e in topic.published] == [0, 1, 2]
    assert positions.positions[CONSUMER] == topic.published[-1].cursor


class SlowSender(RecordingSender):
    async def send(self, url: str, **kwargs: Any) -> SendResult:
        await asyncio.sleep(0.4)
        return await super().send(url, **kwargs)


async def test_a_step_starts_no_attempt_once_its_lease_time_is_up() -> None:
    """So a slow receiver can never keep a step past the lease (another dispatcher would take
    over and deliver the same events in parallel)."""
    world = World(
        SlowSender(),
        settings(lease_ttl=timedelta(seconds=12), timeout=timedelta(seconds=10)),
    )
    hook = await world.start()
    for n in range(10):
        await world.event(n)
    assert await world.dispatcher.step()  # stopped early: more to do
    sent = len(world.sender.sent)
    assert 2 <= sent <= 4  # ~1 s of budget at 0.4 s per attempt
    assert len(await world.service.deliveries(hook, principal=world.principal)) == sent
