"""Fakes of the event log's outside readers: webhook store, sender, consumer positions, topic."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.ports.webhooks import SendResult
from scheduler_domain.events import EventCursor, EventRecord, LoggedEvent
from scheduler_domain.webhooks import WebhookDelivery, WebhookSubscription

_PROGRESS = (
    "enabled",
    "cursor",
    "consecutive_failures",
    "failing_since",
    "next_attempt_at",
    "head_attempts",
    "disabled_reason",
)
#: What only a disable by the loop writes: the loop never turns a subscription back on.
_OWNERS = frozenset({"enabled", "disabled_reason"})


class InMemoryWebhookStore:
    """``WebhookStore`` in dictionaries; ``webhook.disabled`` goes to the in-memory log
    through ``uow_factory``."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory
        self.subscriptions: dict[str, WebhookSubscription] = {}
        self.log: dict[tuple[str, str], WebhookDelivery] = {}

    async def add(self, subscription: WebhookSubscription) -> None:
        self.subscriptions[subscription.id] = replace(subscription)

    async def get(self, webhook_id: str) -> WebhookSubscription | None:
        found = self.subscriptions.get(webhook_id)
        return None if found is None else replace(found)

    async def list(
        self, *, owner_id: str | None, limit: int | None = None, after: str | None = None
    ) -> builtins.list[WebhookSubscription]:
        rows = [
            replace(s)
            for s in sorted(self.subscriptions.values(), key=lambda s: (s.created_at, s.id))
            if owner_id is None or s.owner_id == owner_id
        ]
        anchor = next((s for s in rows if s.id == after), None)
        if anchor is not None:
            rows = [s for s in rows if (s.created_at, s.id) > (anchor.created_at, anchor.id)]
        return rows if limit is None else rows[:limit]

    async def save(self, subscription: WebhookSubscription, *, reset_failures: bool) -> None:
        current = self.subscriptions.get(subscription.id)
        if current is None:
            return
        kept = {} if reset_failures else {name: getattr(current, name) for name in _PROGRESS}
        if reset_failures:
            kept["cursor"] = current.cursor
        self.subscriptions[subscription.id] = replace(subscription, **kept)

    async def delete(self, webhook_id: str) -> bool:
        self.log = {k: v for k, v in self.log.items() if k[0] != webhook_id}
        return self.subscriptions.pop(webhook_id, None) is not None

    async def due(self, *, now: datetime) -> builtins.list[WebhookSubscription]:
        return [
            s
            for s in await self.list(owner_id=None)
            if s.enabled and (s.next_attempt_at is None or s.next_attempt_at <= now)
        ]

    async def record_deliveries(
        self,
        deliveries: Sequence[WebhookDelivery],
        *,
        progress: WebhookSubscription | None = None,
        event: EventRecord | None = None,
    ) -> None:
        if progress is not None:
            current = self.subscriptions.get(progress.id)
            if current is None:
                return
            # it may turn a subscription off, never back on (an owner's disable holds)
            names = [n for n in _PROGRESS if not progress.enabled or n not in _OWNERS]
            changes = {name: getattr(progress, name) for name in names}
            self.subscriptions[progress.id] = replace(current, **changes)
        for delivery in deliveries:
            if delivery.webhook_id in self.subscriptions:
                self.log[(delivery.webhook_id, delivery.event_id)] = delivery
        if event is not None:
            async with self._uow_factory() as uow:
                await uow.events.record(event)
                await uow.commit()

    async def prune_deliveries(self, *, before: datetime, limit: int) -> int:
        old = [k for k, d in self.log.items() if d.updated_at < before][:limit]
        for key in old:
            del self.log[key]
        return len(old)

    async def deliveries(
        self, webhook_id: str, *, limit: int, before: str | None = None
    ) -> builtins.list[WebhookDelivery]:
        rows = sorted(
            (d for (w, _), d in self.log.items() if w == webhook_id),
            key=lambda d: (d.created_at, d.id),
            reverse=True,
        )
        if before is not None:
            ids = [d.id for d in rows]
            rows = rows[ids.index(before) + 1 :] if before in ids else rows
        return rows[:limit]


@dataclass(frozen=True, slots=True)
class Sent:
    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float


@dataclass
class RecordingSender:
    """``WebhookSender`` that records every send and answers with ``answer(n)`` (n from 1);
    ``refuse`` maps a URL to the policy's refusal."""

    answer: Callable[[int], SendResult] = lambda _n: SendResult(status_code=200, latency_ms=1)
    refuse: dict[str, str] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)

    async def vet(self, url: str) -> str | None:
        return self.refuse.get(url)

    async def send(
        self, url: str, *, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> SendResult:
        self.sent.append(Sent(url, body, dict(headers), timeout))
        return self.answer(len(self.sent))


class InMemoryConsumerPositions:
    def __init__(self) -> None:
        self.positions: dict[str, EventCursor] = {}

    async def get(self, name: str) -> EventCursor | None:
        return self.positions.get(name)

    async def set(self, name: str, cursor: EventCursor, *, now: datetime) -> None:
        self.positions[name] = cursor


@dataclass
class RecordingTopic:
    """``EventTopic`` that keeps what it was given; ``fail`` makes the next publishes raise."""

    published: list[LoggedEvent] = field(default_factory=list)
    fail: int = 0
    closed: bool = False

    async def publish(self, events: Sequence[LoggedEvent]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the broker is gone")
        self.published.extend(events)

    async def aclose(self) -> None:
        self.closed = True
