"""Delivering the event log to webhook subscriptions, off the runs' path.

One dispatcher at a time delivers (the ``webhook-delivery`` lease). Each step takes the
enabled subscriptions that are due and, for each (several at once), reads the events after
its cursor that its owner may see, in log order, and POSTs those it wants one by one:

* delivered (2xx): the cursor moves past it, the failure streak ends;
* a failure worth retrying (no answer, a timeout, 5xx, 408, 429): the event stays at the head
  and the subscription is not due again until the backoff (or the receiver's ``Retry-After``)
  has passed; after ``max_attempts`` the event is given up (``failed``) and the cursor moves on;
* any other answer (a 3xx, a 4xx) or a destination the outbound policy refuses: ``failed`` at
  once, the cursor moves on.

So a subscription's events arrive in log order (per run, the order of its transitions), each
at least once; an event a receiver keeps refusing holds back the later ones of that
subscription only, until it is given up. A crash between sending and storing the cursor sends
that event again (same ``webhook-id``). After ``disable_after_failures`` failed attempts in a
row spanning at least ``disable_after``, the subscription is disabled and ``webhook.disabled``
is recorded in the event log, in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta

from scheduler_application.errors import SecretUnreadable
from scheduler_application.events.webhooks import SecretKeeper, describe, payload, signed_headers
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.coordination import LeaseStore
from scheduler_application.ports.repositories import EventQuery
from scheduler_application.ports.secrets import SecretBox
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.ports.webhooks import SendResult, WebhookSender, WebhookStore
from scheduler_domain.events import EventRecord, LoggedEvent
from scheduler_domain.webhooks import (
    WEBHOOK_DISABLED,
    DeliveryStatus,
    RetryPolicy,
    WebhookDelivery,
    WebhookSubscription,
    parse_retry_after,
    retryable,
    should_disable,
)

log = logging.getLogger("scheduler.webhooks")

LEASE = "webhook-delivery"
ACTOR = "system:webhooks"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Bounds one attempt: connecting, sending, reading the (capped) answer.
    timeout: timedelta = timedelta(seconds=10)
    #: Events read per subscription per step.
    batch: int = 100
    #: Subscriptions delivered to at once.
    concurrency: int = 16
    disable_after_failures: int = 10
    disable_after: timedelta = timedelta(hours=24)
    lease_ttl: timedelta = timedelta(seconds=30)


class WebhookDispatcher:
    def __init__(
        self,
        *,
        store: WebhookStore,
        uow_factory: UnitOfWorkFactory,
        sender: WebhookSender,
        clock: Clock,
        settings: DeliverySettings | None = None,
        leases: LeaseStore | None = None,
        holder: str = "dispatcher",
        secret_box: SecretBox | None = None,
    ) -> None:
        self._store = store
        self._uow_factory = uow_factory
        self._sender = sender
        self._clock = clock
        self._settings = settings or DeliverySettings()
        self._leases = leases
        self._holder = holder
        self._secrets = SecretKeeper(secret_box)
        self.attempts = 0
        self._stop_at = float("inf")

    async def step(self) -> bool:
        """Deliver what is due; True when some subscription has more to deliver now."""
        if self._leases is not None and not await self._leases.try_acquire(
            LEASE, holder=self._holder, ttl=self._settings.lease_ttl, now=self._clock.now()
        ):
            return False
        # No attempt starts after this, so the step (each attempt bounded by the timeout) ends
        # well before the lease could pass to another dispatcher.
        budget = self._settings.lease_ttl - self._settings.timeout
        self._stop_at = time.monotonic() + max(budget.total_seconds() / 2, 1.0)
        due = await self._store.due(now=self._clock.now())
        if not due:
            return False
        gate = asyncio.Semaphore(self._settings.concurrency)

        async def one(subscription: WebhookSubscription) -> bool:
            async with gate:
                try:
                    return await self.deliver(subscription)
                except SecretUnreadable as error:
                    log.error("webhook %s: %s", subscription.id, error)
                    return False

        return any(await asyncio.gather(*(one(s) for s in due)))

    async def release(self) -> None:
        """Give the lease up (on stop); an outage meanwhile only lets it expire."""
        if self._leases is None:
            return
        try:
            await self._leases.release(LEASE, holder=self._holder)
        except Exception as error:
            log.warning("could not release the %s lease: %s", LEASE, error)

    async def deliver(self, subscription: WebhookSubscription) -> bool:
        """One page of one subscription's events; True when a full page was delivered.

        The destination is vetted once per page here (a refusal fails the page's events at
        once), and again by every new connection the sender opens. Successes are stored
        together at the end of the page (or before a failure is), so a crash meanwhile sends
        them again: at least once."""
        events = await self._read(subscription)
        sub = subscription
        refusal = await self._sender.vet(sub.url) if events else None
        delivered: list[WebhookDelivery] = []
        for event in events:
            if time.monotonic() > self._stop_at:
                break  # the lease's time is up: the rest next step
            if not sub.matches(event):
                sub = replace(sub, cursor=event.cursor)
                continue
            sub, delivery, moved_on, disabled = await self._attempt(sub, event, refusal)
            if delivery.status is DeliveryStatus.DELIVERED and disabled is None:
                delivered.append(delivery)
                continue
            await self._store.record_deliveries(
                [*delivered, delivery], progress=sub, event=disabled
            )
            if not moved_on:
                return False
            delivered = []
        if sub.cursor != subscription.cursor or delivered:
            await self._store.record_deliveries(delivered, progress=sub)
        return len(events) >= self._settings.batch or time.monotonic() > self._stop_at

    async def _read(self, subscription: WebhookSubscription) -> list[LoggedEvent]:
        async with self._uow_factory() as uow:
            owner = await uow.users.get(subscription.owner_id)
            if owner is None or owner.disabled or not owner.role.can_read_tasks:
                return []
            # The owner's teams as they are now: a member who left a team stops receiving
            # its events.
            teams = (
                None
                if owner.role.sees_all_tasks
                else frozenset({owner.id, *await uow.teams.roles_of(owner.id)})
            )
            return await uow.events.read_log(
                EventQuery(
                    after=subscription.cursor,
                    team_ids=teams,
                    owner_id=owner.id,
                    task_id=subscription.task_id,
                ),
                limit=self._settings.batch,
            )

    async def _attempt(
        self, sub: WebhookSubscription, event: LoggedEvent, refusal: str | None
    ) -> tuple[WebhookSubscription, WebhookDelivery, bool, EventRecord | None]:
        """Send ``event`` once: the subscription's new state, the delivery, whether the
        cursor moved past the event (delivered or given up), and the ``webhook.disabled``
        event when this attempt disabled the subscription."""
        now = self._clock.now()
        body = payload(event)
        headers = signed_headers(
            self._secrets.open(sub.secret),
            msg_id=event.id,
            timestamp=int(now.timestamp()),
            body=body,
        )
        reason = refusal
        if reason is not None:
            result = SendResult(status_code=None, latency_ms=0, error=f"refused: {reason}")
        else:
            result = await self._sender.send(
                sub.url, body=body, headers=headers, timeout=self._settings.timeout.total_seconds()
            )
        self.attempts += 1
        done = self._clock.now()
        attempts = sub.head_attempts + 1
        ok = result.status_code is not None and 200 <= result.status_code < 300
        retry = reason is None and not ok and retryable(result.status_code)
        retry = retry and attempts < self._settings.retry.max_attempts
        if ok:
            status = DeliveryStatus.DELIVERED
            new = replace(
                sub,
                cursor=event.cursor,
                head_attempts=0,
                next_attempt_at=None,
                consecutive_failures=0,
                failing_since=None,
            )
        else:
            status = DeliveryStatus.RETRYING if retry else DeliveryStatus.FAILED
            delay = self._settings.retry.delay(
                attempts, retry_after=parse_retry_after(result.retry_after, now=done)
            )
            new = replace(
                sub,
                cursor=sub.cursor if retry else event.cursor,
                head_attempts=attempts if retry else 0,
                next_attempt_at=done + delay if retry else None,
                consecutive_failures=sub.consecutive_failures + 1,
                failing_since=sub.failing_since or done,
            )
        delivery = WebhookDelivery(
            webhook_id=sub.id,
            event_id=event.id,
            event_kind=event.kind,
            status=status,
            attempts=attempts,
            response_code=result.status_code,
            latency_ms=result.latency_ms,
            last_error=describe(result),
            created_at=done,
            updated_at=done,
        )
        disabled: EventRecord | None = None
        if not ok and should_disable(
            new,
            now=done,
            failures=self._settings.disable_after_failures,
            window=self._settings.disable_after,
        ):
            new = replace(
                new,
                enabled=False,
                disabled_reason=(
                    f"{new.consecutive_failures} failed attempts in a row since "
                    f"{new.failing_since.isoformat() if new.failing_since else '?'}"
                ),
            )
            disabled = EventRecord(
                kind=WEBHOOK_DISABLED,
                at=done,
                actor=ACTOR,
                subject=f"webhook:{sub.id}",
                owner_id=sub.owner_id,
                detail={
                    "webhook_id": sub.id,
                    "url": sub.url,
                    "consecutive_failures": new.consecutive_failures,
                    "failing_since": new.failing_since.isoformat() if new.failing_since else None,
                    "last_error": delivery.last_error,
                },
            )
            log.warning("webhook %s disabled: %s", sub.id, new.disabled_reason)
        return new, delivery, (ok or not retry) and disabled is None, disabled
