"""Webhook delivery against a local receiver, on SQLite and PostgreSQL: the Standard Webhooks
signature checked independently, order, retries (5xx, timeouts, Retry-After), 4xx not retried,
redirects not followed, disabling with its event, owner scoping, the outbound policy at
subscription and at delivery time, the delivery log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.accounts.access import Principal
from scheduler_application.events.webhook_delivery import DeliverySettings, WebhookDispatcher
from scheduler_application.events.webhooks import WebhookService
from scheduler_application.ports.repositories import EventQuery
from scheduler_application.ports.webhooks import SendResult
from scheduler_domain.accounts import Role, User
from scheduler_domain.errors import ValidationError
from scheduler_domain.events import LOG_START, RunEvent
from scheduler_domain.outbound import OutboundPolicy
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.teams import TeamRole
from scheduler_domain.webhooks import DeliveryStatus, RetryPolicy
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.outbound.webhook_sender import HttpWebhookSender
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.persistence.webhooks import SqlWebhookStore
from webhook_receiver import Answer, Received, Receiver, always, receiving, verify

pytestmark = pytest.mark.timeout(60)

LOOPBACK = OutboundPolicy.from_allow(["127.0.0.0/8"])
FAST = DeliverySettings(
    retry=RetryPolicy(
        base_delay=timedelta(seconds=0.05), max_delay=timedelta(seconds=5), max_attempts=5
    ),
    timeout=timedelta(seconds=0.5),
    disable_after_failures=0,
)
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class Setup:
    uow_factory: SqlUnitOfWorkFactory
    store: SqlWebhookStore
    sender: HttpWebhookSender
    service: WebhookService
    alice: Principal
    bob: Principal

    def dispatcher(
        self,
        settings: DeliverySettings = FAST,
        sender: HttpWebhookSender | None = None,
    ) -> WebhookDispatcher:
        return WebhookDispatcher(
            store=self.store,
            uow_factory=self.uow_factory,
            sender=sender or self.sender,
            clock=SystemClock(),
            settings=settings,
        )

    async def run_events(
        self, owner: Principal, statuses: list[RunStatus], *, team_id: str = ""
    ) -> TaskRun:
        """A task of ``owner`` (in ``team_id``, default their personal team) and one run going
        through ``statuses``, in the log."""
        task = Task(
            owner_id=owner.subject_id,
            team_id=team_id,
            name=f"t-{len(statuses)}-{datetime.now(UTC).timestamp()}",
            executor="noop",
            created_at=T0,
            updated_at=T0,
        )
        run = TaskRun(
            task_id=task.id,
            owner_id=owner.subject_id,
            team_id=task.team_id,
            attempt=1,
            trigger=RunTrigger.MANUAL,
            scheduled_for=T0,
            created_at=T0,
            queue="default",
        )
        async with self.uow_factory() as uow:
            await uow.tasks.add(task)
            await uow.runs.add(run)
            previous: RunStatus | None = None
            for status in statuses:
                await uow.events.add(
                    RunEvent(
                        run_id=run.id,
                        task_id=task.id,
                        from_status=previous,
                        to_status=status,
                        at=datetime.now(UTC),
                        actor="test",
                    )
                )
                previous = status
            await uow.commit()
        return run


async def drain(dispatcher: WebhookDispatcher, *, until: int, within: float = 20.0) -> None:
    """Step the dispatcher until it made ``until`` attempts (real waits: backoff is real)."""
    import asyncio

    async with asyncio.timeout(within):
        while dispatcher.attempts < until:
            if not await dispatcher.step():
                await asyncio.sleep(0.02)


@pytest.fixture
async def setup(engine: AsyncEngine) -> AsyncIterator[Setup]:
    uow_factory = SqlUnitOfWorkFactory(engine)
    users = []
    async with uow_factory() as uow:
        for name in ("alice", "bob"):
            user = User(
                username=name, password_hash="x", role=Role.USER, created_at=T0, updated_at=T0
            )
            await uow.users.add(user)
            users.append(user)
        await uow.commit()
    store = SqlWebhookStore(engine)
    async with HttpWebhookSender(policy=LOOPBACK) as sender:
        yield Setup(
            uow_factory=uow_factory,
            store=store,
            sender=sender,
            service=WebhookService(
                store=store, uow_factory=uow_factory, sender=sender, clock=SystemClock()
            ),
            alice=Principal(subject_id=users[0].id, role=Role.USER),
            bob=Principal(subject_id=users[1].id, role=Role.USER),
        )


async def test_deliveries_are_signed_in_order_and_logged(setup: Setup) -> None:
    async with receiving() as receiver:
        created = await setup.service.create(principal=setup.alice, url=receiver.url)
        assert created.secret.startswith("whsec_")
        lifecycle = [RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED]
        run = await setup.run_events(setup.alice, lifecycle)
        dispatcher = setup.dispatcher()
        await drain(dispatcher, until=4)
        await receiver.wait_for(4)

    for request in receiver.requests:
        assert verify(created.secret, request), request.headers
        tampered = Received(request.path, request.headers, request.body + b" ", request.at)
        assert not verify(created.secret, tampered)
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert [b["type"] for b in bodies] == [f"run.{s.value}" for s in lifecycle]
    assert {b["data"]["run_id"] for b in bodies} == {run.id}
    assert [r.headers["webhook-id"] for r in receiver.requests] == [b["data"]["id"] for b in bodies]
    log = await setup.service.deliveries(created.subscription.id, principal=setup.alice)
    assert len(log) == 4
    assert {(d.status, d.response_code, d.attempts) for d in log} == {
        (DeliveryStatus.DELIVERED, 200, 1)
    }
    assert all(d.latency_ms is not None for d in log)
    # Someone else's subscription is not found, nor its delivery log.
    with pytest.raises(Exception, match="not found"):
        await setup.service.deliveries(created.subscription.id, principal=setup.bob)


async def test_a_user_receives_only_the_events_of_their_own_tasks(setup: Setup) -> None:
    async with receiving() as receiver:
        await setup.service.create(principal=setup.alice, url=receiver.url)
        await setup.run_events(setup.bob, [RunStatus.PENDING, RunStatus.QUEUED])
        mine = await setup.run_events(setup.alice, [RunStatus.PENDING])
        dispatcher = setup.dispatcher()
        await drain(dispatcher, until=1)
        while await dispatcher.step():
            pass
    assert [json.loads(r.body)["data"]["run_id"] for r in receiver.requests] == [mine.id]


async def test_retried_after_a_500_and_a_timeout_with_the_same_id(setup: Setup) -> None:
    def respond(_request: Received, n: int) -> Answer:
        return {1: Answer(status=500), 2: Answer(delay=2.0)}.get(n, Answer(status=204))

    async with receiving(Receiver(respond=respond)) as receiver:
        created = await setup.service.create(principal=setup.alice, url=receiver.url)
        await setup.run_events(setup.alice, [RunStatus.PENDING])
        await drain(setup.dispatcher(), until=3)

    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert all(verify(created.secret, r) for r in receiver.requests)
    (delivery,) = await setup.service.deliveries(created.subscription.id, principal=setup.alice)
    assert (delivery.status, delivery.attempts, delivery.response_code) == (
        DeliveryStatus.DELIVERED,
        3,
        204,
    )
    webhook = await setup.service.get(created.subscription.id, principal=setup.alice)
    assert webhook.consecutive_failures == 0


async def test_retry_after_is_honoured_and_blocks_later_events(setup: Setup) -> None:
    def respond(_request: Received, n: int) -> Answer:
        return Answer(status=429, headers={"retry-after": "1"}) if n == 1 else Answer()

    async with receiving(Receiver(respond=respond)) as receiver:
        await setup.service.create(principal=setup.alice, url=receiver.url)
        await setup.run_events(setup.alice, [RunStatus.PENDING, RunStatus.QUEUED])
        await drain(setup.dispatcher(), until=3)

    first, again, second = receiver.requests
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert again.at - first.at >= 0.95  # not the 0.05 s backoff: the receiver's 1 s
    assert json.loads(second.body)["type"] == "run.queued"  # in order, after the retry


async def test_a_4xx_is_not_retried_and_a_redirect_is_not_followed(setup: Setup) -> None:
    def respond(_request: Received, n: int) -> Answer:
        if n == 1:
            return Answer(status=400, body=b"x" * 10_000)
        return Answer(status=302, headers={"location": "http://169.254.169.254/latest"})

    async with receiving(Receiver(respond=respond)) as receiver:
        created = await setup.service.create(principal=setup.alice, url=receiver.url)
        await setup.run_events(setup.alice, [RunStatus.PENDING, RunStatus.QUEUED])
        await drain(setup.dispatcher(), until=2)

    assert len(receiver.requests) == 2
    log = await setup.service.deliveries(created.subscription.id, principal=setup.alice)
    assert sorted((d.response_code, d.status, d.attempts) for d in log) == [
        (302, DeliveryStatus.FAILED, 1),
        (400, DeliveryStatus.FAILED, 1),
    ]
    assert all(d.last_error is not None and len(d.last_error) <= 300 for d in log)


async def test_sustained_failure_disables_the_webhook_with_an_event(setup: Setup) -> None:
    settings = DeliverySettings(
        retry=RetryPolicy(base_delay=timedelta(seconds=0.01), max_attempts=100),
        timeout=timedelta(seconds=0.5),
        disable_after_failures=3,
        disable_after=timedelta(0),
    )
    async with receiving(Receiver(respond=always(503))) as receiver:
        created = await setup.service.create(principal=setup.alice, url=receiver.url)
        await setup.run_events(setup.alice, [RunStatus.PENDING])
        dispatcher = setup.dispatcher(settings)
        await drain(dispatcher, until=3)
        for _ in range(5):
            await dispatcher.step()
        assert len(receiver.requests) == 3

    webhook = await setup.service.get(created.subscription.id, principal=setup.alice)
    assert not webhook.enabled
    assert webhook.disabled_reason is not None
    assert "3 failed attempts" in webhook.disabled_reason
    async with setup.uow_factory() as uow:
        events = await uow.events.read_log(
            EventQuery(
                after=LOG_START, owner_id=setup.alice.subject_id, kinds=("webhook.disabled",)
            ),
            limit=10,
        )
    (event,) = events
    assert event.subject == f"webhook:{webhook.id}"
    assert event.detail["consecutive_failures"] == 3
    # Enabling it again clears the streak.
    again = await setup.service.update(webhook.id, principal=setup.alice, changes={"enabled": True})
    assert again.enabled
    assert again.consecutive_failures == 0
    assert again.disabled_reason is None


async def test_the_outbound_policy_refuses_loopback_unless_allowed(setup: Setup) -> None:
    async with HttpWebhookSender(policy=OutboundPolicy()) as strict:
        service = WebhookService(
            store=setup.store, uow_factory=setup.uow_factory, sender=strict, clock=SystemClock()
        )
        for url in ("http://127.0.0.1:9/hook", "http://localhost:9/", "http://[::1]:9/"):
            with pytest.raises(ValidationError) as refused:
                await service.create(principal=setup.alice, url=url)
            assert refused.value.field == "url"

        # Allowed when subscribing, refused at delivery time (as after a DNS change).
        async with receiving() as receiver:
            created = await setup.service.create(principal=setup.alice, url=receiver.url)
            await setup.run_events(setup.alice, [RunStatus.PENDING])
            await drain(setup.dispatcher(sender=strict), until=1)
        assert receiver.requests == []
        (delivery,) = await setup.service.deliveries(created.subscription.id, principal=setup.alice)
        assert delivery.status is DeliveryStatus.FAILED
        assert delivery.last_error is not None
        assert "loopback" in delivery.last_error


async def test_the_test_event_is_sent_signed_and_logged(setup: Setup) -> None:
    async with receiving() as receiver:
        created = await setup.service.create(principal=setup.alice, url=receiver.url)
        delivery = await setup.service.send_test(created.subscription.id, principal=setup.alice)
    (request,) = receiver.requests
    assert verify(created.secret, request)
    assert json.loads(request.body)["type"] == "webhook.test"
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.response_code == 200
    log = await setup.service.deliveries(created.subscription.id, principal=setup.alice)
    assert [d.event_id for d in log] == [request.headers["webhook-id"]]


async def test_old_delivery_log_rows_are_pruned(setup: Setup) -> None:
    async with receiving() as receiver:
        created = await setup.service.create(principal=setup.alice, url=receiver.url)
        await setup.run_events(setup.alice, [RunStatus.PENDING, RunStatus.QUEUED])
        await drain(setup.dispatcher(), until=2)
    now = datetime.now(UTC)
    assert await setup.store.prune_deliveries(before=now - timedelta(hours=1), limit=10) == 0
    assert await setup.store.prune_deliveries(before=now + timedelta(seconds=1), limit=1) == 1
    assert await setup.store.prune_deliveries(before=now + timedelta(seconds=1), limit=10) == 1
    assert await setup.service.deliveries(created.subscription.id, principal=setup.alice) == []


async def test_a_webhook_gets_its_owners_teams_events_while_they_are_a_member(
    setup: Setup,
) -> None:
    """Delivery reads with the owner's memberships as they are at each page: a viewer of bob's
    team receives its runs' events, and no more once removed."""
    from scheduler_application.accounts.teams import TeamService

    teams = TeamService(uow_factory=setup.uow_factory, clock=SystemClock())
    ops = await teams.create("ops", principal=setup.bob)
    bob = Principal(setup.bob.subject_id, Role.USER, teams={ops.team.id: TeamRole.ADMIN})
    await teams.set_member("ops", setup.alice.subject_id, TeamRole.VIEWER, principal=bob)
    async with receiving() as receiver:
        await setup.service.create(principal=setup.alice, url=receiver.url)
        shared = await setup.run_events(setup.bob, [RunStatus.PENDING], team_id=ops.team.id)
        await setup.run_events(setup.bob, [RunStatus.PENDING])  # bob's personal team
        dispatcher = setup.dispatcher()
        await drain(dispatcher, until=1)
        while await dispatcher.step():
            pass
        await teams.remove_member("ops", setup.alice.subject_id, principal=bob)
        await setup.run_events(setup.bob, [RunStatus.PENDING], team_id=ops.team.id)
        while await dispatcher.step():
            pass
    assert [json.loads(r.body)["data"]["run_id"] for r in receiver.requests] == [shared.id]


@dataclass
class DisablingMidSend:
    """Delivers through ``sender``, the owner disabling the webhook while the first request is
    on its way (after the delivery loop read the subscription, before it records progress)."""

    sender: HttpWebhookSender
    setup: Setup
    owner: Principal
    webhook_id: str = ""

    async def vet(self, url: str) -> str | None:
        return await self.sender.vet(url)

    async def send(
        self, url: str, *, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> SendResult:
        if self.webhook_id:
            await self.setup.service.update(
                self.webhook_id, principal=self.owner, changes={"enabled": False}
            )
            self.webhook_id = ""
        return await self.sender.send(url, body=body, headers=headers, timeout=timeout)


async def test_disabling_while_a_delivery_is_on_its_way_stays_disabled(setup: Setup) -> None:
    """The delivery loop's progress (cursor, streak) never turns a webhook back on: an owner's
    disable that lands while the loop is delivering holds, and enabling it again resumes after
    the last event delivered."""
    async with receiving() as receiver:
        created = await setup.service.create(principal=setup.alice, url=receiver.url)
        first = await setup.run_events(setup.alice, [RunStatus.PENDING])
        sender = DisablingMidSend(
            setup.sender, setup, setup.alice, webhook_id=created.subscription.id
        )
        dispatcher = WebhookDispatcher(
            store=setup.store,
            uow_factory=setup.uow_factory,
            sender=sender,
            clock=SystemClock(),
            settings=FAST,
        )
        await drain(dispatcher, until=1)
        webhook = await setup.service.get(created.subscription.id, principal=setup.alice)
        assert not webhook.enabled

        second = await setup.run_events(setup.alice, [RunStatus.PENDING])
        for _ in range(3):
            await dispatcher.step()
        assert dispatcher.attempts == 1  # disabled: nothing more is sent
        assert len(receiver.requests) == 1

        again = await setup.service.update(
            webhook.id, principal=setup.alice, changes={"enabled": True}
        )
        assert again.enabled
        await drain(dispatcher, until=2)
        await receiver.wait_for(2)
    assert [json.loads(r.body)["data"]["run_id"] for r in receiver.requests] == [
        first.id,
        second.id,
    ]
