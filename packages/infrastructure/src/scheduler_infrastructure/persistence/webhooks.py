"""Webhook subscriptions, their delivery log, and event consumers' positions in SQL. Each call
is its own short transaction on the engine (the delivery loop runs beside the use cases)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from scheduler_domain.events import EventCursor, EventRecord
from scheduler_domain.status import RunStatus
from scheduler_domain.webhooks import DeliveryStatus, WebhookDelivery, WebhookSubscription
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.repositories.events import SqlRunEventRepository
from scheduler_infrastructure.persistence.tables import (
    event_consumers,
    webhook_deliveries,
    webhooks,
)

_w = webhooks.c
_d = webhook_deliveries.c

_SETTINGS = ("url", "event_types", "task_id", "statuses", "description", "enabled", "updated_at")
_PROGRESS = (
    "enabled",
    "cursor_txid",
    "cursor_seq",
    "consecutive_failures",
    "failing_since",
    "next_attempt_at",
    "head_attempts",
    "disabled_reason",
)


def _row(s: WebhookSubscription) -> dict[str, Any]:
    return {
        "id": s.id,
        "owner_id": s.owner_id,
        "url": s.url,
        "secret": s.secret,
        "event_types": list(s.event_types),
        "task_id": s.task_id,
        "statuses": [status.value for status in s.statuses],
        "description": s.description,
        "enabled": s.enabled,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "cursor_txid": s.cursor.txid,
        "cursor_seq": s.cursor.seq,
        "consecutive_failures": s.consecutive_failures,
        "failing_since": s.failing_since,
        "next_attempt_at": s.next_attempt_at,
        "head_attempts": s.head_attempts,
        "disabled_reason": s.disabled_reason,
    }


def _subscription(row: RowMapping) -> WebhookSubscription:
    return WebhookSubscription(
        id=row["id"],
        owner_id=row["owner_id"],
        url=row["url"],
        secret=row["secret"],
        event_types=tuple(row["event_types"]),
        task_id=row["task_id"],
        statuses=tuple(RunStatus(s) for s in row["statuses"]),
        description=row["description"],
        enabled=bool(row["enabled"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        cursor=EventCursor(int(row["cursor_txid"]), int(row["cursor_seq"])),
        consecutive_failures=int(row["consecutive_failures"]),
        failing_since=row["failing_since"],
        next_attempt_at=row["next_attempt_at"],
        head_attempts=int(row["head_attempts"]),
        disabled_reason=row["disabled_reason"],
    )


def _delivery(row: RowMapping) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        event_kind=row["event_kind"],
        status=DeliveryStatus(row["status"]),
        attempts=int(row["attempts"]),
        response_code=row["response_code"],
        latency_ms=row["latency_ms"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _progress_values(progress: WebhookSubscription) -> dict[str, Any]:
    """The delivery loop's columns. It may turn a subscription off (a failure streak), never
    back on: its copy was read before it delivered, and an owner's disable meanwhile holds."""
    row = _row(progress)
    names = _PROGRESS if not progress.enabled else set(_PROGRESS) - {"enabled", "disabled_reason"}
    return {name: row[name] for name in names}


class SqlWebhookStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = postgresql if engine.dialect.name == "postgresql" else sqlite

    async def add(self, subscription: WebhookSubscription) -> None:
        async with translated("webhook"), self._engine.begin() as conn:
            await conn.execute(webhooks.insert().values(_row(subscription)))

    async def get(self, webhook_id: str) -> WebhookSubscription | None:
        async with translated("webhook"), self._engine.connect() as conn:
            row = (await conn.execute(select(webhooks).where(_w.id == webhook_id))).mappings()
            found = row.first()
        return None if found is None else _subscription(found)

    async def list(
        self, *, owner_id: str | None, limit: int | None = None, after: str | None = None
    ) -> builtins.list[WebhookSubscription]:
        statement = select(webhooks).order_by(_w.created_at, _w.id).limit(limit)
        if owner_id is not None:
            statement = statement.where(_w.owner_id == owner_id)
        async with translated("webhook"), self._engine.connect() as conn:
            if after is not None:
                anchor = (
                    await conn.execute(
                        select(_w.created_at, _w.id).where(
                            _w.id == after, *([_w.owner_id == owner_id] if owner_id else [])
                        )
                    )
                ).first()
                if anchor is not None:
                    statement = statement.where(
                        tuple_(_w.created_at, _w.id) > tuple_(anchor[0], anchor[1])
                    )
            rows = (await conn.execute(statement)).mappings().all()
        return [_subscription(r) for r in rows]

    async def save(self, subscription: WebhookSubscription, *, reset_failures: bool) -> None:
        row = _row(subscription)
        columns = set(_SETTINGS) | (set(_PROGRESS) if reset_failures else set())
        values = {name: row[name] for name in columns}
        if reset_failures:
            # the cursor is the delivery loop's: only the streak is cleared
            values.pop("cursor_txid")
            values.pop("cursor_seq")
        async with translated("webhook"), self._engine.begin() as conn:
            await conn.execute(update(webhooks).where(_w.id == subscription.id).values(values))

    async def delete(self, webhook_id: str) -> bool:
        async with translated("webhook"), self._engine.begin() as conn:
            await conn.execute(delete(webhook_deliveries).where(_d.webhook_id == webhook_id))
            result = await conn.execute(delete(webhooks).where(_w.id == webhook_id))
        return bool(result.rowcount)

    async def due(self, *, now: datetime) -> builtins.list[WebhookSubscription]:
        statement = (
            select(webhooks)
            .where(_w.enabled, or_(_w.next_attempt_at.is_(None), _w.next_attempt_at <= now))
            .order_by(_w.created_at, _w.id)
        )
        async with translated("webhook"), self._engine.connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_subscription(r) for r in rows]

    async def record_deliveries(
        self,
        deliveries: Sequence[WebhookDelivery],
        *,
        progress: WebhookSubscription | None = None,
        event: EventRecord | None = None,
    ) -> None:
        async with translated("webhook delivery"), self._engine.begin() as conn:
            if progress is not None:
                result = await conn.execute(
                    update(webhooks).where(_w.id == progress.id).values(_progress_values(progress))
                )
                if not result.rowcount:
                    return  # deleted meanwhile
            for delivery in deliveries:
                await self._upsert(conn, delivery)
            if event is not None:
                await SqlRunEventRepository(lambda: conn).record(event)

    async def _upsert(self, conn: AsyncConnection, delivery: WebhookDelivery) -> None:
        exists = select(webhooks.c.id).where(_w.id == delivery.webhook_id)
        if (await conn.execute(exists)).first() is None:
            return
        statement = self._dialect.insert(webhook_deliveries).values(
            id=delivery.id,
            webhook_id=delivery.webhook_id,
            event_id=delivery.event_id,
            event_kind=delivery.event_kind,
            status=delivery.status.value,
            attempts=delivery.attempts,
            response_code=delivery.response_code,
            latency_ms=delivery.latency_ms,
            last_error=delivery.last_error,
            created_at=delivery.created_at,
            updated_at=delivery.updated_at,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[_d.webhook_id, _d.event_id],
            set_={
                "status": statement.excluded.status,
                "attempts": statement.excluded.attempts,
                "response_code": statement.excluded.response_code,
                "latency_ms": statement.excluded.latency_ms,
                "last_error": statement.excluded.last_error,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await conn.execute(statement)

    async def prune_deliveries(self, *, before: datetime, limit: int) -> int:
        oldest = select(_d.id).where(_d.updated_at < before).limit(limit)
        async with translated("webhook delivery"), self._engine.begin() as conn:
            result = await conn.execute(delete(webhook_deliveries).where(_d.id.in_(oldest)))
        return int(result.rowcount or 0)

    async def deliveries(
        self, webhook_id: str, *, limit: int, before: str | None = None
    ) -> builtins.list[WebhookDelivery]:
        statement = (
            select(webhook_deliveries)
            .where(_d.webhook_id == webhook_id)
            .order_by(_d.created_at.desc(), _d.id.desc())
            .limit(limit)
        )
        async with translated("webhook delivery"), self._engine.connect() as conn:
            if before is not None:
                anchor = (
                    await conn.execute(
                        select(_d.created_at, _d.id).where(
                            _d.id == before, _d.webhook_id == webhook_id
                        )
                    )
                ).first()
                if anchor is not None:
                    statement = statement.where(
                        tuple_(_d.created_at, _d.id) < tuple_(anchor[0], anchor[1])
                    )
            rows = (await conn.execute(statement)).mappings().all()
        return [_delivery(r) for r in rows]


class SqlConsumerPositions:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = postgresql if engine.dialect.name == "postgresql" else sqlite

    async def get(self, name: str) -> EventCursor | None:
        c = event_consumers.c
        async with translated("event consumer"), self._engine.connect() as conn:
            row = (
                await conn.execute(select(c.cursor_txid, c.cursor_seq).where(c.name == name))
            ).first()
        return None if row is None else EventCursor(int(row[0]), int(row[1]))

    async def set(self, name: str, cursor: EventCursor, *, now: datetime) -> None:
        statement = self._dialect.insert(event_consumers).values(
            name=name, cursor_txid=cursor.txid, cursor_seq=cursor.seq, updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=[event_consumers.c.name],
            set_={
                "cursor_txid": statement.excluded.cursor_txid,
                "cursor_seq": statement.excluded.cursor_seq,
                "updated_at": statement.excluded.updated_at,
            },
        )
        async with translated("event consumer"), self._engine.begin() as conn:
            await conn.execute(statement)


__all__ = ["SqlConsumerPositions", "SqlWebhookStore"]
