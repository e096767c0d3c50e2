"""Webhook subscriptions and their delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from scheduler_domain.status import RunStatus
from scheduler_domain.webhooks import DeliveryStatus, WebhookDelivery, WebhookSubscription

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=66)]
EventTypes = Annotated[list[EventType], msgspec.Meta(max_length=50)]
Statuses = Annotated[list[RunStatus], msgspec.Meta(max_length=20)]
Description = Annotated[str, msgspec.Meta(max_length=200)]
TaskId = Annotated[str, msgspec.Meta(max_length=64)]


class WebhookCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Url
    #: Kinds of the event log (``run.failed``, ``task.created``, ``webhook.disabled``) or a
    #: whole area (``run.*``); empty: every event the owner may see.
    event_types: EventTypes = msgspec.field(default_factory=list)
    #: Only the events of this task.
    task_id: TaskId | None = None
    #: Only run transitions to one of these statuses.
    statuses: Statuses = msgspec.field(default_factory=list)
    description: Description = ""
    enabled: bool = True


class WebhookUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Url | msgspec.UnsetType = msgspec.UNSET
    event_types: EventTypes | msgspec.UnsetType = msgspec.UNSET
    task_id: TaskId | msgspec.UnsetType | None = msgspec.UNSET
    statuses: Statuses | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    #: true again after an automatic disabling: the failure streak is cleared and delivery
    #: resumes after the last event delivered or given up.
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class WebhookOut(msgspec.Struct, kw_only=True):
    id: str
    owner_id: str
    url: str
    event_types: list[str]
    task_id: str | None
    statuses: list[RunStatus]
    description: str
    enabled: bool
    #: Why it was disabled automatically (None: enabled, or disabled by hand).
    disabled_reason: str | None
    #: The position after the last event delivered or given up.
    cursor: str
    consecutive_failures: int
    failing_since: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: WebhookSubscription) -> WebhookOut:
        return cls(
            id=s.id,
            owner_id=s.owner_id,
            url=s.url,
            event_types=list(s.event_types),
            task_id=s.task_id,
            statuses=list(s.statuses),
            description=s.description,
            enabled=s.enabled,
            disabled_reason=s.disabled_reason,
            cursor=str(s.cursor),
            consecutive_failures=s.consecutive_failures,
            failing_since=s.failing_since,
            next_attempt_at=s.next_attempt_at,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )


class CreatedWebhookOut(msgspec.Struct, kw_only=True):
    #: The signing secret (``whsec_…``): shown here once, never again.
    secret: str
    webhook: WebhookOut


class WebhookList(msgspec.Struct, kw_only=True):
    items: list[WebhookOut]


class DeliveryOut(msgspec.Struct, kw_only=True):
    id: str
    #: The event's id: the ``webhook-id`` header the receiver got.
    event_id: str
    event_kind: str
    status: DeliveryStatus
    attempts: int
    response_code: int | None
    latency_ms: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=d.id,
            event_id=d.event_id,
            event_kind=d.event_kind,
            status=d.status,
            attempts=d.attempts,
            response_code=d.response_code,
            latency_ms=d.latency_ms,
            last_error=d.last_error,
            created_at=d.created_at,
            updated_at=d.updated_at,
        )


class DeliveryPage(msgspec.Struct, kw_only=True):
    items: list[DeliveryOut]
    #: Pass as ``before`` for older deliveries (None: no more).
    next_before: str | None
