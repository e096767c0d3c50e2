"""Concurrent ``POST /api/v1/tasks/{id}/trigger`` through the real app share transactions (the
trigger group commit), on SQLite and PostgreSQL: each request still gets its own answer —
created or replayed, refused with its own reason — durable before it, gated as alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from api_harness import Api, Caller, api_settings, running_api, wipe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def any_api(backend_engine: AsyncEngine) -> AsyncIterator[tuple[Api, AsyncEngine]]:
    """The API on SQLite, then on PostgreSQL."""
    async with running_api(backend_engine) as harness:
        yield harness, backend_engine
    await wipe(backend_engine)


async def _stored(engine: AsyncEngine, run_id: str) -> str | None:
    async with engine.connect() as connection:
        status = await connection.scalar(
            text("SELECT status FROM task_runs WHERE id = :id"), {"id": run_id}
        )
    return None if status is None else str(status)


async def _trigger(
    api: Api,
    engine: AsyncEngine,
    caller: Caller,
    task_id: str,
    *,
    key: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[httpx.Response, str | None]:
    """The answer, and the run's stored status read the moment the answer came."""
    headers = dict(caller.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await api.client.post(f"/api/v1/tasks/{task_id}/trigger", headers=headers, json=body)
    if response.status_code >= 300:
        return response, None
    return response, await _stored(engine, response.json()["id"])


async def test_concurrent_triggers_share_transactions_and_each_is_durable_before_its_answer(
    any_api: tuple[Api, AsyncEngine],
) -> None:
    api, engine = any_api
    alice = await api.user("alice")
    task = await api.task(alice, name="busy")
    answers = await asyncio.gather(*(_trigger(api, engine, alice, task["id"]) for _ in range(40)))
    assert [r.status_code for r, _ in answers] == [201] * 40, [r.text for r, _ in answers]
    assert all(r.headers["Idempotent-Replayed"] == "false" for r, _ in answers)
    assert [status for _, status in answers] == ["queued"] * 40  # stored before answered
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT id, created_at FROM task_runs WHERE task_id = :t"), {"t": task["id"]}
            )
        ).all()
        first_events = (
            await connection.scalars(
                text("SELECT to_status FROM run_events WHERE run_id = :r ORDER BY seq"),
                {"r": rows[-1].id},
            )
        ).all()
    assert len(rows) == 40
    # A group's runs are stamped with the one instant its transaction took: fewer instants
    # than runs means that requests shared transactions.
    assert len({row.created_at for row in rows}) < 40
    assert list(first_events) == ["pending", "queued"]
    assert await api.resources.queue.depth("default") == 40  # every run published once


async def test_one_key_from_concurrent_requests_makes_one_run_and_replays(
    any_api: tuple[Api, AsyncEngine],
) -> None:
    api, engine = any_api
    alice = await api.user("alice")
    task = await api.task(alice, name="keyed")
    answers = await asyncio.gather(
        *(_trigger(api, engine, alice, task["id"], key=f"k{i % 3}") for i in range(24))
    )
    by_key: dict[str, set[str]] = {}
    created = 0
    for i, (response, _) in enumerate(answers):
        assert response.status_code in (200, 201), response.text
        replayed = response.headers["Idempotent-Replayed"] == "true"
        assert replayed == (response.status_code == 200)
        created += not replayed
        by_key.setdefault(f"k{i % 3}", set()).add(response.json()["id"])
    assert created == 3
    assert all(len(ids) == 1 for ids in by_key.values())
    async with engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT count(*) FROM task_runs WHERE task_id = :t"), {"t": task["id"]}
        )
    assert stored == 3


async def test_bad_requests_among_concurrent_ones_fail_alone_with_their_own_status(
    any_api: tuple[Api, AsyncEngine],
) -> None:
    api, engine = any_api
    alice = await api.user("alice")
    bob = await api.user("bob")
    viewer = await api.user("vera", Role.VIEWER)
    task = await api.task(alice, name="mixed")
    bobs = await api.task(bob, name="bobs")
    past = "2020-01-01T00:00:00Z"
    calls = [
        _trigger(api, engine, alice, task["id"]),
        _trigger(api, engine, alice, "no-such-task"),
        _trigger(api, engine, alice, bobs["id"]),
        _trigger(api, engine, bob, bobs["id"]),
        _trigger(api, engine, viewer, task["id"]),
        _trigger(api, engine, alice, task["id"], key="   "),
        _trigger(api, engine, alice, task["id"], body={"logical_time": "2999-01-01T00:00:00Z"}),
        _trigger(api, engine, alice, task["id"], body={"logical_time": past}),
        _trigger(api, engine, alice, task["id"], body={"logical_time": past}),
        *(_trigger(api, engine, alice, task["id"]) for _ in range(10)),
    ]
    answers = [response for response, _ in await asyncio.gather(*calls)]
    codes = [r.status_code for r in answers]
    assert codes[:7] == [201, 404, 404, 201, 403, 422, 422], [r.text for r in answers]
    assert sorted(codes[7:9]) == [201, 409]  # one logical time, one run
    assert codes[9:] == [201] * 10
    assert answers[1].json()["field"] == "task_id"
    assert answers[5].json()["field"] == "idempotency_key"
    assert answers[6].json()["field"] == "logical_time"
    conflict = answers[7] if answers[7].status_code == 409 else answers[8]
    assert conflict.json()["field"] == "logical_time"
    async with engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT count(*) FROM task_runs WHERE task_id = :t"), {"t": task["id"]}
        )
    assert stored == 12


async def test_gates_and_rate_limits_hold_for_concurrent_triggers(
    any_api: tuple[Api, AsyncEngine],
) -> None:
    api, engine = any_api
    alice = await api.user("alice")
    capped = await api.task(alice, name="capped", max_concurrent=2)
    limited = await api.task(alice, name="limited", rate_limit="2/m")
    answers = await asyncio.gather(
        *(_trigger(api, engine, alice, capped["id"]) for _ in range(6)),
        *(_trigger(api, engine, alice, limited["id"]) for _ in range(6)),
    )
    assert all(r.status_code == 201 for r, _ in answers), [r.text for r, _ in answers]
    assert sorted(status or "" for _, status in answers[:6]) == ["pending"] * 4 + ["queued"] * 2
    assert sorted(status or "" for _, status in answers[6:]) == ["pending"] * 4 + ["queued"] * 2
    assert await api.resources.queue.depth("default") == 4  # only the queued ones were sent


async def test_request_limits_refuse_a_principals_extra_triggers_and_no_one_elses(
    backend_engine: AsyncEngine,
) -> None:
    settings = api_settings()
    settings = replace(settings, api=replace(settings.api, rate_limits=("user=12/m",)))
    try:
        async with running_api(backend_engine, settings=settings) as api:
            alice = await api.user("alice")
            bob = await api.user("bob")
            task = await api.task(alice, name="limited-caller")  # one of alice's 12
            bobs = await api.task(bob, name="bobs")
            answers = await asyncio.gather(
                *(_trigger(api, backend_engine, alice, task["id"]) for _ in range(14)),
                *(_trigger(api, backend_engine, bob, bobs["id"]) for _ in range(3)),
            )
            codes = [response.status_code for response, _ in answers]
            assert sorted(codes[:14]) == [201] * 11 + [429] * 3
            assert codes[14:] == [201] * 3
            async with backend_engine.connect() as connection:
                stored = await connection.scalar(
                    text("SELECT count(*) FROM task_runs WHERE task_id = :t"), {"t": task["id"]}
                )
            assert stored == 11
    finally:
        await wipe(backend_engine)
