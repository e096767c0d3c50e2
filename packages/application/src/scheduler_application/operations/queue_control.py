"""Operators steer queues: pause, resume, purge, and set a rate limit or a concurrency cap.

Only operators and admins may (a viewer or user is refused by role, whatever the queue).
Every change records who made it and when in the queue's settings, and is logged on the
``scheduler.queues`` logger with the queue, the actor and the new settings. (Hook for the
event log: :meth:`QueueControl._changed` is the one place every change passes through after its
commit.)

Pausing commits the setting and puts the queue's ``queued`` runs back to ``pending`` in the
same transaction (each with a ``queued → pending`` event): no worker can claim them, and the
relay leaves the queue's pending runs alone until it is resumed, when they go out in their
usual order. Nothing is lost or failed. Purging cancels the queue's pending and queued runs,
each with its ordinary cancel event, in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler_application.accounts.access import Principal, ensure_can_read_tasks
from scheduler_application.dispatch.queue_gate import unqueue_paused
from scheduler_application.errors import PermissionDenied
from scheduler_application.events.log import record_event
from scheduler_application.limits.references import ensure_limits_exist
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.queue_settings import (
    Fairness,
    QueueSettings,
    check_fair_in_flight,
    check_max_concurrency,
    validate_queue_name,
)
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.shared_limits import validate_limit_names
from scheduler_domain.status import RunStatus

logger = logging.getLogger("scheduler.queues")
PURGE_REASON = "queue purged"
#: Runs cancelled (or put back to pending) per transaction.
BATCH = 500


class _Unset:
    """A field left out of an update (``None`` means: clear it)."""


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class QueueChanges:
    """A partial update: a field left ``UNSET`` keeps its value, ``None`` clears it."""

    rate_limit: RateLimit | None = UNSET
    max_concurrency: int | None = UNSET
    limits: tuple[str, ...] = UNSET
    fairness: Fairness = UNSET
    fair_in_flight: int = UNSET


@dataclass(frozen=True, slots=True)
class QueueView:
    """A queue's stored settings (defaults when it has none) and the rate limit in force, with
    where it comes from: ``queue`` (stored), ``config`` (the configured default) or None."""

    settings: QueueSettings
    effective_rate_limit: RateLimit | None
    rate_limit_source: str | None


def ensure_steers_queues(principal: Principal) -> None:
    if not principal.role.operates_workers:
        raise PermissionDenied(f"role {principal.role.value!r} cannot change queues")


class QueueControl:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        default_rate_limits: Mapping[str, RateLimit] | None = None,
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._defaults = dict(default_rate_limits or {})
        self._observer = observer

    def view(self, settings: QueueSettings) -> QueueView:
        if settings.rate_limit is not None:
            return QueueView(settings, settings.rate_limit, "queue")
        default = self._defaults.get(settings.name)
        return QueueView(settings, default, None if default is None else "config")

    async def get(self, name: str, *, principal: Principal) -> QueueView:
        ensure_can_read_tasks(principal)
        validate_queue_name(name, field="name")
        async with self._uow_factory() as uow:
            settings = await uow.queue_settings.get(name)
        return self.view(settings if settings is not None else QueueSettings(name=name))

    async def all(self, *, principal: Principal) -> dict[str, QueueView]:
        """Every queue with stored settings or a configured default, by name."""
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            stored = {s.name: s for s in await uow.queue_settings.list()}
        for name in self._defaults:
            stored.setdefault(name, QueueSettings(name=name))
        return {name: self.view(settings) for name, settings in sorted(stored.items())}

    async def pause(self, name: str, *, principal: Principal) -> QueueView:
        """Pause the queue; its queued runs go back to pending (all of them, in batches)."""
        settings = await self._change(name, principal, paused=True)
        while True:
            async with self._uow_factory() as uow:
                events = await unqueue_paused(
                    uow, [name], now=self._clock.now(), actor=principal.actor, limit=BATCH
                )
                if not events:
                    break
                current = await uow.queue_settings.get(name)
                if current is None or not current.paused:
                    break  # resumed meanwhile: the rest may go
                await uow.commit()
        return settings

    async def resume(self, name: str, *, principal: Principal) -> QueueView:
        return await self._change(name, principal, paused=False)

    async def update(self, name: str, changes: QueueChanges, *, principal: Principal) -> QueueView:
        fields: dict[str, Any] = {}
        if changes.rate_limit is not UNSET:
            if changes.rate_limit is not None and not isinstance(changes.rate_limit, RateLimit):
                raise TypeError("rate_limit must be a RateLimit")
            fields["rate_limit"] = changes.rate_limit
        if changes.max_concurrency is not UNSET:
            fields["max_concurrency"] = check_max_concurrency(changes.max_concurrency)
        if changes.limits is not UNSET:
            fields["limits"] = validate_limit_names(changes.limits)
        if changes.fairness is not UNSET:
            fields["fairness"] = Fairness(changes.fairness)
        if changes.fair_in_flight is not UNSET:
            fields["fair_in_flight"] = check_fair_in_flight(changes.fair_in_flight)
        return await self._change(name, principal, **fields)

    async def purge(self, name: str, *, principal: Principal) -> int:
        """Cancel every pending and queued run of the queue, each with its cancel event; the
        number cancelled. A run a worker claims meanwhile is left to run."""
        ensure_steers_queues(principal)
        validate_queue_name(name, field="name")
        cancelled = 0
        while True:
            now = self._clock.now()
            async with self._uow_factory() as uow:
                runs = await uow.runs.waiting_in_queues(
                    [name], statuses=[RunStatus.PENDING, RunStatus.QUEUED], limit=BATCH
                )
                if not runs:
                    break
                writes = []
                events = []
                for run in runs:
                    read_version = run.version
                    events.append(run.cancel(now=now, actor=principal.actor, reason=PURGE_REASON))
                    writes.append((run, read_version))
                await uow.runs.update_many(writes)
                await uow.events.add_many(events)
                await uow.commit()
            cancelled += len(runs)
            for _ in runs:
                self._observer.run_finished(status=RunStatus.CANCELLED.value)
        async with self._uow_factory() as uow:
            await record_event(
                uow,
                "queue.purged",
                at=self._clock.now(),
                actor=principal.actor,
                subject=name,
                detail={"cancelled": cancelled},
            )
            await uow.commit()
        logger.info(
            "queue %s purged: %d run(s) cancelled",
            name,
            cancelled,
            extra={"queue": name, "actor": principal.actor, "cancelled": cancelled},
        )
        return cancelled

    async def _change(self, name: str, principal: Principal, **fields: Any) -> QueueView:
        ensure_steers_queues(principal)
        validate_queue_name(name, field="name")
        now = self._clock.now()
        async with self._uow_factory() as uow:
            settings = await uow.queue_settings.get(name) or QueueSettings(name=name)
            if "limits" in fields:
                await ensure_limits_exist(uow, fields["limits"], known=settings.limits)
            for key, value in fields.items():
                setattr(settings, key, value)
            settings.touch(actor=principal.actor, now=now)
            await uow.queue_settings.save(settings)
            if fields.get("paused") is True:
                await unqueue_paused(uow, [name], now=now, actor=principal.actor, limit=BATCH)
            await record_event(
                uow,
                _change_kind(fields),
                at=now,
                actor=principal.actor,
                subject=name,
                detail=_audited(fields),
            )
            await uow.commit()
        self._changed(settings, fields)
        return self.view(settings)

    def _changed(self, settings: QueueSettings, fields: Mapping[str, Any]) -> None:
        """Every committed change is logged here (its event is in the log already)."""
        changed = _audited(fields)
        logger.info(
            "queue %s changed by %s: %s",
            settings.name,
            settings.updated_by,
            changed,
            extra={"queue": settings.name, "actor": settings.updated_by, "changes": changed},
        )


def _change_kind(fields: Mapping[str, Any]) -> str:
    """The event a settings change is: ``queue.paused``, ``queue.resumed`` or ``queue.updated``
    (limits)."""
    if "paused" in fields:
        return "queue.paused" if fields["paused"] else "queue.resumed"
    return "queue.updated"


def _audited(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: (
            str(value)
            if isinstance(value, RateLimit | Fairness)
            else list(value)
            if isinstance(value, tuple)
            else value
        )
        for key, value in fields.items()
    }
