"""Principals, instants and task specs shared by the application unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from scheduler_application.accounts.access import Principal
from scheduler_application.testing import (
    InMemoryStore,
    InMemoryUnitOfWork,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role

START = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)

ALICE = Principal("alice", Role.USER)
BOB = Principal("bob", Role.USER)
VIEWER_ALICE = Principal("alice", Role.VIEWER)
OPERATOR = Principal("olga", Role.OPERATOR)
WORKER_ROLE = Principal("w-1", Role.WORKER, via="api_key")


def task_spec(name: str = "nightly-report", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "executor": "shell",
        "params": {"argv": ["echo", "hi"]},
    }
    spec.update(overrides)
    return spec


class Gated(InMemoryUnitOfWorkFactory):
    """Reads that wait at a gate the test opens: concurrent lookups overlap as they would on a
    real database. Counts the reads begun."""

    def __init__(self, store: InMemoryStore) -> None:
        super().__init__(store)
        self.gate = asyncio.Event()
        self.begun = 0

    def __call__(self) -> InMemoryUnitOfWork:
        return _GatedUnitOfWork(self)


class _GatedUnitOfWork(InMemoryUnitOfWork):
    def __init__(self, factory: Gated) -> None:
        super().__init__(factory.store)
        self._factory = factory

    async def __aenter__(self) -> _GatedUnitOfWork:
        self._factory.begun += 1
        await self._factory.gate.wait()
        await super().__aenter__()
        return self


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)
