"""A template change rewrites every subscription set-based on PostgreSQL: the statements it
sends do not grow with the number of subscriptions (it sent about six per subscription, one
round trip each, before: ~10 s per 1,000 subscriptions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.conftest import wipe
from scheduler_application.accounts.access import Principal
from scheduler_application.templates.service import TemplateService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY, FakeClock
from scheduler_domain.accounts import Role
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = [pytest.mark.timeout(120), pytest.mark.postgres]

OPERATOR = Principal("op", Role.OPERATOR)
NAP: dict[str, Any] = {
    "name": "nap",
    "executor": "noop",
    "params": {"sleep_seconds": "{{n}}"},
    "params_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
    "policies": {"limits": []},
}


@pytest.fixture
async def counted(postgres_engine: AsyncEngine) -> AsyncIterator[list[str]]:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(postgres_engine.sync_engine, "before_cursor_execute", seen)
    yield statements
    event.remove(postgres_engine.sync_engine, "before_cursor_execute", seen)
    await wipe(postgres_engine)


async def test_a_template_change_sends_as_many_statements_for_30_subscriptions_as_for_3(
    postgres_engine: AsyncEngine, counted: list[str]
) -> None:
    templates = TemplateService(
        uow_factory=SqlUnitOfWorkFactory(postgres_engine),
        clock=FakeClock(datetime(2030, 1, 1, tzinfo=UTC)),
        executor_policy=OPEN_EXECUTOR_POLICY,
    )
    template = await templates.create(NAP, principal=OPERATOR)

    async def subscribe(first: int, last: int) -> None:
        for n in range(first, last):
            user = Principal(f"user-{n}", Role.USER)
            await templates.subscribe(template.id, {"params": {"n": n}}, principal=user)

    async def change(priority: int) -> int:
        counted.clear()
        await templates.update(
            template.id, {"policies": {"priority": priority}}, principal=OPERATOR
        )
        return len(counted)

    await subscribe(0, 3)
    few = await change(6)
    await subscribe(3, 30)
    many = await change(7)
    assert many == few, counted
    async with postgres_engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT priority, template_version, params FROM tasks WHERE template_id = :t"),
            {"t": template.id},
        )
        written = {(r[0], r[1], r[2]["sleep_seconds"]) for r in rows}
        logged = await connection.execute(
            text("SELECT count(*) FROM run_events WHERE kind = 'task.updated'")
        )
        assert logged.scalar() == 3 + 30
    assert written == {(7, 3, n) for n in range(30)}
