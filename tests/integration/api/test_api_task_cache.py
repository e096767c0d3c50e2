"""``GET /tasks/{id}`` from memory on PostgreSQL, and never a row that changed: whatever
process or tool changes or deletes a task (here: plain SQL on another connection, as the
dispatcher, another API process or ``psql`` would), the API answers with the new row within the
NOTIFY's delivery — the cache's time to live is an hour here, so it cannot be what helps. While
the API cannot hear the notifications it reads every request from the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from api_harness import Api, Caller, api_settings, running_api, wipe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_api.bootstrap import TASK_CACHE_STATE
from scheduler_application.tasks.read_cache import TaskCache
from scheduler_domain.accounts import Role

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

#: How long the API may take to hear of a change.
BOUND_SECONDS = 1.0


@asynccontextmanager
async def api_with_cache(postgres_engine: AsyncEngine) -> AsyncIterator[Api]:
    settings = api_settings()
    settings = replace(settings, api=replace(settings.api, task_cache_seconds=3600.0))
    try:
        async with running_api(postgres_engine, settings=settings, lifespan=True) as api:
            await _until(lambda: _cache(api).enabled)
            yield api
    finally:
        await wipe(postgres_engine)


def _cache(api: Api) -> TaskCache:
    cache = api.app.state[TASK_CACHE_STATE]
    assert isinstance(cache, TaskCache)
    return cache


async def _until(condition: Callable[[], bool], *, bound: float = 10.0) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _task(api: Api, caller: Caller) -> dict[str, Any]:
    made = await api.client.post(
        "/api/v1/tasks",
        json={"name": "report", "executor": "noop", "schedule": {"interval_seconds": 3600}},
        headers=caller.headers,
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def _remembered(api: Api, caller: Caller, task_id: str) -> dict[str, Any]:
    """Read the task until the API answers from memory; that answer."""
    cache = _cache(api)
    await api.client.get(f"/api/v1/tasks/{task_id}", headers=caller.headers)
    hits = cache.hits
    answer = await api.client.get(f"/api/v1/tasks/{task_id}", headers=caller.headers)
    assert answer.status_code == 200, answer.text
    assert cache.hits == hits + 1, "the task is not remembered: this test would prove nothing"
    return dict(answer.json())


async def _sql(engine: AsyncEngine, statement: str, **params: Any) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(statement), params)


async def _seen_within(
    api: Api, caller: Caller, task_id: str, seen: Callable[[Any], bool]
) -> float:
    """Seconds until the API's answer satisfies ``seen`` (fails past BOUND_SECONDS)."""
    started = time.monotonic()
    while True:
        answer = await api.client.get(f"/api/v1/tasks/{task_id}", headers=caller.headers)
        if seen(answer):
            return time.monotonic() - started
        assert time.monotonic() - started < BOUND_SECONDS, f"still answering {answer.text}"
        await asyncio.sleep(0.005)


async def test_an_answer_from_memory_is_the_answer_from_the_database(
    postgres_engine: AsyncEngine,
) -> None:
    """The cached task's answer is encoded once and kept: it must be the very answer a read
    of the database gives (body, type, ETag), and the task as created."""
    async with api_with_cache(postgres_engine) as api:
        alice = await api.user("alice", Role.USER)
        task = await _task(api, alice)
        cache = _cache(api)
        hits = cache.hits
        read = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
        assert cache.hits == hits  # from the database
        kept = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
        assert cache.hits == hits + 1  # from memory
        for answer in (read, kept):
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "application/json"
            assert answer.headers["etag"] == '"1"'
            assert answer.json() == task
        assert kept.content == read.content


async def test_a_change_written_elsewhere_is_answered_at_once(
    postgres_engine: AsyncEngine,
) -> None:
    async with api_with_cache(postgres_engine) as api:
        alice = await api.user("alice", Role.USER)
        task = await _task(api, alice)
        await _remembered(api, alice, task["id"])
        await _sql(
            postgres_engine,
            "UPDATE tasks SET description = 'edited elsewhere', version = version + 1"
            " WHERE id = :id",
            id=task["id"],
        )
        await _seen_within(
            api, alice, task["id"], lambda a: a.json()["description"] == "edited elsewhere"
        )


async def test_the_dispatchers_next_run_at_is_answered_at_once(
    postgres_engine: AsyncEngine,
) -> None:
    """The dispatcher moves ``next_run_at`` without a version bump: still a change."""
    async with api_with_cache(postgres_engine) as api:
        alice = await api.user("alice", Role.USER)
        task = await _task(api, alice)
        before = (await _remembered(api, alice, task["id"]))["next_run_at"]
        await _sql(
            postgres_engine,
            "UPDATE tasks SET next_run_at = next_run_at + interval '1 hour' WHERE id = :id",
            id=task["id"],
        )
        await _seen_within(api, alice, task["id"], lambda a: a.json()["next_run_at"] != before)


async def test_a_task_deleted_elsewhere_is_gone_at_once(postgres_engine: AsyncEngine) -> None:
    async with api_with_cache(postgres_engine) as api:
        alice = await api.user("alice", Role.USER)
        task = await _task(api, alice)
        await _remembered(api, alice, task["id"])
        await _sql(postgres_engine, "DELETE FROM tasks WHERE id = :id", id=task["id"])
        await _seen_within(api, alice, task["id"], lambda a: a.status_code == 404)


async def test_without_its_subscription_the_api_reads_the_database(
    postgres_engine: AsyncEngine,
) -> None:
    """The listening connection is killed: from then until it subscribes again nothing is
    served from memory, so a change made meanwhile (whose notification nobody hears) is
    answered by the very next read; once subscribed again, the cache serves again."""
    async with api_with_cache(postgres_engine) as api:
        alice = await api.user("alice", Role.USER)
        task = await _task(api, alice)
        await _remembered(api, alice, task["id"])
        cache = _cache(api)
        async with postgres_engine.connect() as connection:
            killed = (
                await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE query ILIKE '%scheduler_task_rows%' AND pid <> pg_backend_pid()"
                    )
                )
            ).all()
        assert killed, "no listening connection found"
        await _until(lambda: not cache.enabled, bound=BOUND_SECONDS)
        # Written with the trigger off: as if its notification had been lost.
        async with postgres_engine.begin() as connection:
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(
                text("UPDATE tasks SET description = 'unheard' WHERE id = :id"), {"id": task["id"]}
            )
        if not cache.enabled:
            answer = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
            assert answer.json()["description"] == "unheard"
        await _until(lambda: cache.enabled)
        answer = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
        assert answer.json()["description"] == "unheard"  # reset on subscribing: nothing old
        await _remembered(api, alice, task["id"])


async def test_another_teams_caller_gets_404_for_a_remembered_task(
    postgres_engine: AsyncEngine,
) -> None:
    async with api_with_cache(postgres_engine) as api:
        alice = await api.user("alice", Role.USER)
        bob = await api.user("bob", Role.USER)
        task = await _task(api, alice)
        await _remembered(api, alice, task["id"])
        answer = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=bob.headers)
        assert answer.status_code == 404, answer.text


@asynccontextmanager
async def _unheard(engine: AsyncEngine) -> AsyncIterator[None]:
    """No task row notifications for a while: only what the API process does itself can make
    its next read fresh."""
    await _sql(engine, "ALTER TABLE tasks DISABLE TRIGGER tasks_notify_row_update")
    try:
        yield
    finally:
        await _sql(engine, "ALTER TABLE tasks ENABLE TRIGGER tasks_notify_row_update")


async def test_a_template_change_through_the_api_is_read_at_once_by_that_process(
    postgres_engine: AsyncEngine,
) -> None:
    async with api_with_cache(postgres_engine) as api:
        olga = await api.user("olga", Role.OPERATOR)
        alice = await api.user("alice", Role.USER)
        made = await api.client.post(
            "/api/v1/templates",
            json={"name": "ping", "executor": "noop", "params": {"sleep_seconds": 0}},
            headers=olga.headers,
        )
        assert made.status_code == 201, made.text
        template = made.json()
        subscribed = await api.client.post(
            f"/api/v1/templates/{template['id']}/subscriptions",
            json={"name": "mine"},
            headers=alice.headers,
        )
        assert subscribed.status_code == 201, subscribed.text
        task = subscribed.json()
        await _remembered(api, alice, task["id"])
        async with _unheard(postgres_engine):
            changed = await api.client.patch(
                f"/api/v1/templates/{template['id']}",
                json={"params": {"sleep_seconds": 1}},
                headers={**olga.headers, "If-Match": '"1"'},
            )
            assert changed.status_code == 200, changed.text
            answer = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
        assert answer.json()["params"] == {"sleep_seconds": 1}
        assert answer.json()["template_version"] == 2


async def test_a_tasks_file_applied_through_the_api_is_read_at_once_by_that_process(
    postgres_engine: AsyncEngine,
) -> None:
    async with api_with_cache(postgres_engine) as api:
        olga = await api.user("olga", Role.OPERATOR)
        document: dict[str, Any] = {"tasks": [{"name": "nightly", "executor": "noop"}]}
        applied = await api.client.post("/api/v1/tasks/apply", json=document, headers=olga.headers)
        assert applied.status_code == 200, applied.text
        listed = await api.client.get("/api/v1/tasks", headers=olga.headers)
        task_id = listed.json()["items"][0]["id"]
        await _remembered(api, olga, task_id)
        document["tasks"][0]["description"] = "changed by the file"
        async with _unheard(postgres_engine):
            again = await api.client.post(
                "/api/v1/tasks/apply", json=document, headers=olga.headers
            )
            assert again.status_code == 200, again.text
            answer = await api.client.get(f"/api/v1/tasks/{task_id}", headers=olga.headers)
        assert answer.json()["description"] == "changed by the file"
