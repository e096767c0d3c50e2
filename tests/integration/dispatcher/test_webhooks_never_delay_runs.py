"""A webhook receiver that hangs never holds up a run: deliveries are a loop of their own
beside the dispatcher's, reading the log after the runs' transactions have committed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from dispatcher_stack import OWNER, dispatcher_stack, running_worker

from scheduler_application.events.webhook_delivery import DeliverySettings, WebhookDispatcher
from scheduler_application.events.webhooks import WebhookService
from scheduler_dispatcher.loops import webhook_loop
from scheduler_domain.accounts import User
from scheduler_domain.outbound import OutboundPolicy
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.outbound.webhook_sender import HttpWebhookSender
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.persistence.webhooks import SqlWebhookStore
from webhook_receiver import Answer, Receiver, receiving

pytestmark = pytest.mark.timeout(90)

HANG = 20.0


async def test_a_run_completes_while_the_receiver_hangs(uow_factory: SqlUnitOfWorkFactory) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    async with uow_factory() as uow:
        await uow.users.add(
            User(
                id=OWNER.subject_id,
                username="user-1",
                password_hash="x",
                role=OWNER.role,
                created_at=t0,
                updated_at=t0,
            )
        )
        await uow.commit()
    engine = uow_factory.engine
    store = SqlWebhookStore(engine)
    clock = SystemClock()
    hanging = Receiver(respond=lambda _r, _n: Answer(delay=HANG))
    async with (
        receiving(hanging) as receiver,
        HttpWebhookSender(policy=OutboundPolicy.from_allow(["127.0.0.1"])) as sender,
    ):
        service = WebhookService(store=store, uow_factory=uow_factory, sender=sender, clock=clock)
        await service.create(principal=OWNER, url=receiver.url)
        delivery = WebhookDispatcher(
            store=store,
            uow_factory=uow_factory,
            sender=sender,
            clock=clock,
            settings=DeliverySettings(timeout=timedelta(seconds=HANG * 2)),
        )

        async with dispatcher_stack(
            uow_factory,
            extra_loops=lambda _s: [webhook_loop(delivery, interval=timedelta(seconds=0.05))],
        ) as stack:
            task_id = await stack.create_task("hook-me", executor="noop")
            async with running_worker(stack.worker()):
                # the receiver is hanging on the task.created delivery by now
                await receiver.wait_for(1, within=10)
                started = time.monotonic()
                run = await stack.runs.trigger(task_id, principal=OWNER)

                async def finished() -> bool:
                    runs = await stack.runs_of(task_id)
                    return any(r.id == run.id and r.status.is_final for r in runs)

                await stack.wait_for(finished, within=10)
                took = time.monotonic() - started
            (done,) = await stack.runs_of(task_id)
            assert done.status is RunStatus.SUCCEEDED
            assert took < HANG / 2, took
            # still hanging on the first delivery: nothing else was sent meanwhile
            assert len(receiver.requests) == 1
            await asyncio.sleep(0)
