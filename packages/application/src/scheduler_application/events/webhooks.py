"""Webhook subscriptions: create (the secret shown once), list, inspect, change, delete, the
delivery log, and a test event sent at once. Delivering the log is :mod:`webhook_delivery`.

A subscription belongs to its creator and delivers what its owner may read of the event log
(the events of their own tasks; an admin's or operator's: every event), as the SSE stream
does; the owner's role is looked at again before every delivery.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from scheduler_application.accounts.access import (
    Principal,
    can_see,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
)
from scheduler_application.errors import NotFound, SecretUnreadable
from scheduler_application.paging import page_limit
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.secrets import SecretBox
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.ports.webhooks import SendResult, WebhookSender, WebhookStore
from scheduler_domain.errors import ValidationError
from scheduler_domain.events import LoggedEvent
from scheduler_domain.ids import new_id
from scheduler_domain.status import RunStatus
from scheduler_domain.webhooks import (
    TEST_EVENT,
    DeliveryStatus,
    WebhookDelivery,
    WebhookSubscription,
    check_event_types,
    check_url,
    new_secret,
    sign,
)

#: Marks a secret stored sealed by the SecretBox (else it is stored as generated).
SEALED_PREFIX = "sealed:"
#: Characters of a receiver's answer or an error kept in the delivery log.
MAX_ERROR = 300


def payload(event: LoggedEvent) -> bytes:
    """The body of a delivery (and of a broker message): ``{"type", "timestamp", "data"}``
    as Standard Webhooks suggests, ``data`` being the log entry as ``GET /events`` shows it."""
    document = {
        "type": event.kind,
        "timestamp": event.at.isoformat(),
        "data": event_document(event),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def event_document(event: LoggedEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "cursor": str(event.cursor),
        "kind": event.kind,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "task_id": event.task_id,
        "run_id": event.run_id,
        "subject": event.subject,
        "from_status": None if event.from_status is None else event.from_status.value,
        "to_status": None if event.to_status is None else event.to_status.value,
        "detail": event.detail,
    }


def signed_headers(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }


def describe(result: SendResult) -> str | None:
    """The delivery log's ``last_error`` for an attempt (None when it succeeded)."""
    if result.error is not None:
        return result.error[:MAX_ERROR]
    if result.status_code is not None and 200 <= result.status_code < 300:
        return None
    text = f"HTTP {result.status_code}"
    if result.excerpt:
        text += f": {result.excerpt}"
    return text[:MAX_ERROR]


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    subscription: WebhookSubscription
    #: The signing secret, in the answer to the creation only.
    secret: str


class SecretKeeper:
    """Seals signing secrets with the SecretBox when one is configured; stored as generated
    otherwise (docs/operations.md says to configure ``secrets.key``)."""

    def __init__(self, box: SecretBox | None) -> None:
        self._box = box

    def seal(self, secret: str) -> str:
        return secret if self._box is None else SEALED_PREFIX + self._box.seal(secret)

    def open(self, stored: str) -> str:
        if not stored.startswith(SEALED_PREFIX):
            return stored
        if self._box is None:
            raise SecretUnreadable("a webhook's secret is sealed and no secrets.key is set")
        return self._box.open(stored.removeprefix(SEALED_PREFIX))


class WebhookService:
    def __init__(
        self,
        *,
        store: WebhookStore,
        uow_factory: UnitOfWorkFactory,
        sender: WebhookSender,
        clock: Clock,
        secret_box: SecretBox | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._uow_factory = uow_factory
        self._sender = sender
        self._clock = clock
        self._secrets = SecretKeeper(secret_box)
        self._timeout = timeout_seconds

    async def create(
        self,
        *,
        principal: Principal,
        url: str,
        event_types: Sequence[str] = (),
        task_id: str | None = None,
        statuses: Sequence[RunStatus] = (),
        description: str = "",
        enabled: bool = True,
    ) -> CreatedWebhook:
        ensure_can_write_tasks(principal)
        event_types = check_event_types(event_types)
        await self._vet(url)
        async with self._uow_factory() as uow:
            if task_id is not None:
                task = await uow.tasks.get(task_id)
                if task is None or not can_see(principal, task.team_id):
                    raise NotFound(f"task {task_id} not found", field="task_id")
            head = await uow.events.log_head()
        now = self._clock.now()
        secret = new_secret()
        subscription = WebhookSubscription(
            owner_id=principal.subject_id,
            url=url,
            secret=self._secrets.seal(secret),
            event_types=tuple(event_types),
            task_id=task_id,
            statuses=tuple(statuses),
            description=description,
            enabled=enabled,
            created_at=now,
            updated_at=now,
            cursor=head,
        )
        await self._store.add(subscription)
        return CreatedWebhook(subscription=subscription, secret=secret)

    async def get(self, webhook_id: str, *, principal: Principal) -> WebhookSubscription:
        ensure_can_read_tasks(principal)
        subscription = await self._store.get(webhook_id)
        # A subscription is its owner's own: it belongs to their personal team (their id).
        if subscription is None or not can_see(principal, subscription.owner_id):
            raise NotFound(f"webhook {webhook_id} not found", field="webhook_id")
        return subscription

    async def list(
        self, *, principal: Principal, limit: int | None = None, after: str | None = None
    ) -> builtins.list[WebhookSubscription]:
        """The caller's subscriptions; an admin's or operator's: everyone's. Oldest first;
        ``limit`` and ``after`` (the last id of the previous page) read one keyset page."""
        ensure_can_read_tasks(principal)
        scope = None if principal.role.sees_all_tasks else principal.subject_id
        return await self._store.list(
            owner_id=scope, limit=None if limit is None else page_limit(limit), after=after
        )

    async def update(
        self, webhook_id: str, *, principal: Principal, changes: dict[str, Any]
    ) -> WebhookSubscription:
        """``changes``: any of url, event_types, task_id, statuses, description, enabled.
        Enabling a disabled subscription clears its failure streak; delivery resumes after
        the last event it delivered (or gave up on)."""
        ensure_can_write_tasks(principal)
        current = await self.get(webhook_id, principal=principal)
        unknown = set(changes) - {
            "url", "event_types", "task_id", "statuses", "description", "enabled"
        }  # fmt: skip
        if unknown:
            raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
        if "url" in changes:
            check_url(changes["url"])
            await self._vet(changes["url"])
        if "event_types" in changes:
            changes["event_types"] = check_event_types(changes["event_types"])
        if changes.get("task_id") is not None:
            async with self._uow_factory() as uow:
                task = await uow.tasks.get(changes["task_id"])
            if task is None or not can_see(principal, task.team_id):
                raise NotFound(f"task {changes['task_id']} not found", field="task_id")
        if "statuses" in changes:
            changes["statuses"] = tuple(changes["statuses"])
        updated = replace(current, **changes, updated_at=self._clock.now())
        reset = bool(changes.get("enabled")) and not current.enabled
        if reset:
            updated.consecutive_failures = 0
            updated.failing_since = None
            updated.next_attempt_at = None
            updated.head_attempts = 0
            updated.disabled_reason = None
        await self._store.save(updated, reset_failures=reset)
        return updated

    async def delete(self, webhook_id: str, *, principal: Principal) -> None:
        ensure_can_write_tasks(principal)
        await self.get(webhook_id, principal=principal)
        await self._store.delete(webhook_id)

    async def deliveries(
        self, webhook_id: str, *, principal: Principal, limit: int = 50, before: str | None = None
    ) -> builtins.list[WebhookDelivery]:
        await self.get(webhook_id, principal=principal)
        return await self._store.deliveries(webhook_id, limit=page_limit(limit), before=before)

    async def send_test(self, webhook_id: str, *, principal: Principal) -> WebhookDelivery:
        """Send a ``webhook.test`` event now, once (no retries), signed like any other, and
        log it; also to a disabled subscription (to check it before enabling it again)."""
        ensure_can_write_tasks(principal)
        subscription = await self.get(webhook_id, principal=principal)
        now = self._clock.now()
        event = LoggedEvent(
            cursor=subscription.cursor,
            id=f"test_{new_id()}",
            kind=TEST_EVENT,
            at=now,
            actor=principal.actor,
            task_id=None,
            run_id=None,
            subject=f"webhook:{subscription.id}",
            from_status=None,
            to_status=None,
            detail={"message": "a test event sent on request"},
        )
        body = payload(event)
        headers = signed_headers(
            self._secrets.open(subscription.secret),
            msg_id=event.id,
            timestamp=int(now.timestamp()),
            body=body,
        )
        reason = await self._sender.vet(subscription.url)
        if reason is not None:
            result = SendResult(status_code=None, latency_ms=0, error=f"refused: {reason}")
        else:
            result = await self._sender.send(
                subscription.url, body=body, headers=headers, timeout=self._timeout
            )
        ok = result.status_code is not None and 200 <= result.status_code < 300
        delivery = WebhookDelivery(
            webhook_id=subscription.id,
            event_id=event.id,
            event_kind=event.kind,
            status=DeliveryStatus.DELIVERED if ok else DeliveryStatus.FAILED,
            attempts=1,
            response_code=result.status_code,
            latency_ms=result.latency_ms,
            last_error=describe(result),
            created_at=now,
            updated_at=now,
        )
        await self._store.record_deliveries([delivery])
        return delivery

    async def _vet(self, url: str) -> None:
        check_url(url)
        reason = await self._sender.vet(url)
        if reason is not None:
            raise ValidationError(f"the outbound policy refuses this URL ({reason})", field="url")
