"""Ports of the log's outside readers: webhook subscriptions and their delivery log, the
HTTP sender that delivers, consumer positions, and the broker topic."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from scheduler_domain.events import EventCursor, EventRecord, LoggedEvent
from scheduler_domain.webhooks import WebhookDelivery, WebhookSubscription


class WebhookStore(Protocol):
    """Subscriptions and their delivery log. Each call is its own short transaction; a
    subscription's secret is stored as given (the service seals it)."""

    async def add(self, subscription: WebhookSubscription) -> None: ...

    async def get(self, webhook_id: str) -> WebhookSubscription | None: ...

    async def list(
        self, *, owner_id: str | None, limit: int | None = None, after: str | None = None
    ) -> builtins.list[WebhookSubscription]:
        """Oldest first, by ``(created_at, id)``; every owner's when ``owner_id`` is None; at
        most ``limit`` (all when None), after the subscription ``after`` (a keyset page: an
        id that is not there, or not the owner's, starts from the beginning)."""
        ...

    async def save(self, subscription: WebhookSubscription, *, reset_failures: bool) -> None:
        """Store an existing subscription's settings (url, filters, description, enabled);
        its delivery progress only when ``reset_failures`` (the failure streak cleared, as
        when it is enabled again). The delivery loop's progress is never overwritten else."""
        ...

    async def delete(self, webhook_id: str) -> bool: ...

    async def due(self, *, now: datetime) -> builtins.list[WebhookSubscription]:
        """Enabled subscriptions whose next attempt is not in the future."""
        ...

    async def record_deliveries(
        self,
        deliveries: Sequence[WebhookDelivery],
        *,
        progress: WebhookSubscription | None = None,
        event: EventRecord | None = None,
    ) -> None:
        """In one transaction: upsert the delivery rows of (webhook, event), store
        ``progress`` (cursor, failure streak, next attempt; enabled and the disabled reason
        only when ``progress`` turns it off: the loop's copy was read before it delivered, and
        an owner's disable meanwhile holds) and append ``event`` (``webhook.disabled``) to the
        event log. A deleted subscription's delivery is dropped."""
        ...

    async def prune_deliveries(self, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` delivery-log rows last updated before ``before``; the count."""
        ...

    async def deliveries(
        self, webhook_id: str, *, limit: int, before: str | None = None
    ) -> builtins.list[WebhookDelivery]:
        """Newest first; ``before``: a delivery id, for the next page."""
        ...


class ConsumerPositions(Protocol):
    """Where a named reader of the event log got to (``event-topic``)."""

    async def get(self, name: str) -> EventCursor | None: ...

    async def set(self, name: str, cursor: EventCursor, *, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What one HTTP attempt got: ``status_code`` None when there was no answer (refused,
    unreachable, timed out: ``error`` says which)."""

    status_code: int | None
    latency_ms: int
    error: str | None = None
    retry_after: str | None = None
    #: The first bytes of the answer (capped), for the delivery log's error.
    excerpt: str = ""


class WebhookSender(Protocol):
    """POSTs one delivery through the outbound policy (every address the host resolves to is
    vetted, at each connection), never following redirects, reading at most a few KB of the
    answer, within ``timeout`` seconds in all."""

    async def vet(self, url: str) -> str | None:
        """Why the outbound policy refuses ``url`` (its host resolves to a forbidden
        address), or None. A name that does not resolve is not refused: its delivery fails."""
        ...

    async def send(
        self, url: str, *, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> SendResult: ...


class EventTopic(Protocol):
    """A broker destination for the event log (a RabbitMQ topic exchange, a Redis stream).
    ``publish`` returns once the broker has confirmed every event, in the order given, and
    raises otherwise (the caller then publishes them again: at least once)."""

    async def publish(self, events: Sequence[LoggedEvent]) -> None: ...

    async def aclose(self) -> None: ...
