"""``POST /api/v1/runs/batch``: per-item answers, durability before the answer, idempotency
across concurrent requests, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_harness import Api, Caller, running_api, wipe
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_infrastructure.queues import messages
from scheduler_infrastructure.queues.postgres import PostgresRunQueue

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def any_api(backend_engine: AsyncEngine) -> AsyncIterator[tuple[Api, AsyncEngine]]:
    """The API on SQLite, then on PostgreSQL."""
    async with running_api(backend_engine) as harness:
        yield harness, backend_engine
    await wipe(backend_engine)


async def _batch(api: Api, caller: Caller, triggers: list[dict[str, Any]]) -> Any:
    return await api.client.post(
        "/api/v1/runs/batch", json={"triggers": triggers}, headers=caller.headers
    )


async def test_a_batch_answers_each_trigger_in_order(
    any_api: tuple[Api, AsyncEngine],
) -> None:
    api, engine = any_api
    alice = await api.user("alice")
    bob = await api.user("bob")
    task = await api.task(alice, name="many")
    bobs = await api.task(bob, name="bobs")
    response = await _batch(
        api,
        alice,
        [
            {"task_id": task["id"]},
            {"task_id": task["id"], "idempotency_key": "k", "priority": 8},
            {"task_id": bobs["id"]},
            {"task_id": task["id"], "priority": 99},
            {"task_id": task["id"], "logical_time": "yesterday"},
            {"task_id": task["id"], "idempotency_key": "k"},
        ],
    )
    assert response.status_code == 422, response.text  # a malformed date: the request's shape
    assert "triggers[4].logical_time" in response.text

    response = await _batch(
        api,
        alice,
        [
            {"task_id": task["id"]},
            {"task_id": task["id"], "idempotency_key": "k", "priority": 8},
            {"task_id": bobs["id"]},
            {"task_id": task["id"], "priority": 99},
            {"task_id": task["id"], "idempotency_key": "k"},
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == [
        "created",
        "created",
        "refused",
        "refused",
        "replayed",
    ]
    assert (body["created"], body["replayed"], body["refused"]) == (2, 1, 2)
    assert body["results"][1]["run"]["priority"] == 8
    assert body["results"][4]["run"]["id"] == body["results"][1]["run"]["id"]
    assert body["results"][2]["error"]["code"] == "not_found"
    assert body["results"][3]["error"]["field"] == "priority"
    # Durable before the answer: the runs are in the database.
    async with engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT count(*) FROM task_runs WHERE task_id = :t"), {"t": task["id"]}
        )
    assert stored == 2


async def test_concurrent_batches_with_shared_keys_create_each_run_once(
    any_api: tuple[Api, AsyncEngine],
) -> None:
    api, engine = any_api
    alice = await api.user("alice")
    task = await api.task(alice, name="raced")
    triggers = [{"task_id": task["id"], "idempotency_key": f"k{i}"} for i in range(20)]
    triggers += [{"task_id": "nope"}, {"task_id": task["id"], "priority": -1}]
    answers = await asyncio.gather(*(_batch(api, alice, triggers) for _ in range(4)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    ids = [{r["run"]["id"] for r in a.json()["results"] if r["run"] is not None} for a in answers]
    assert all(len(found) == 20 for found in ids)
    assert ids[0] == ids[1] == ids[2] == ids[3]  # every request names the same 20 runs
    assert all(a.json()["refused"] == 2 for a in answers)
    async with engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT count(*) FROM task_runs WHERE task_id = :t"), {"t": task["id"]}
        )
    assert stored == 20


async def test_limits_roles_and_shape(any_api: tuple[Api, AsyncEngine]) -> None:
    api, _ = any_api
    alice = await api.user("alice")
    task = await api.task(alice, name="t")
    too_many = await _batch(api, alice, [{"task_id": task["id"]}] * 1001)
    assert too_many.status_code == 422
    assert "triggers" in too_many.text
    empty = await _batch(api, alice, [])
    assert empty.status_code == 422
    unknown = await api.client.post(
        "/api/v1/runs/batch",
        json={"triggers": [{"task_id": task["id"], "colour": "red"}]},
        headers=alice.headers,
    )
    assert unknown.status_code == 422
    assert "colour" in unknown.text
    from scheduler_domain.accounts import Role

    viewer = await api.user("vera", Role.VIEWER)
    refused = await _batch(api, viewer, [{"task_id": task["id"]}])
    assert refused.status_code == 403


@pytest.mark.postgres
async def test_on_the_postgres_queue_every_run_created_has_exactly_one_message(
    postgres_engine: AsyncEngine,
) -> None:
    """Triggers on the database's own queue write each run's message in the statement that
    inserts the run (``Outbox.insert_new``): concurrent single triggers (one group commit),
    batches, a repeated idempotency key and bad input together leave one message per run
    created — none for a replayed or refused trigger, none written twice at the commit."""
    queue = PostgresRunQueue(postgres_engine, listen=False)
    try:
        async with running_api(postgres_engine, queue=queue) as api:
            alice = await api.user("alice")
            task = await api.task(alice, name="counted")
            url = f"/api/v1/tasks/{task['id']}/trigger"
            keyed = {**alice.headers, "Idempotency-Key": "same"}
            requests = [api.client.post(url, headers=alice.headers) for _ in range(12)]
            requests += [api.client.post(url, headers=keyed) for _ in range(3)]
            requests += [
                api.client.post("/api/v1/tasks/nope/trigger", headers=alice.headers)
                for _ in range(2)
            ]
            batch = [
                {"task_id": task["id"]},
                {"task_id": task["id"], "idempotency_key": "same"},
                {"task_id": "nope"},
                {"task_id": task["id"], "priority": -1},
            ]
            requests += [_batch(api, alice, batch) for _ in range(2)]
            answers = await asyncio.gather(*requests)
        statuses = [answer.status_code for answer in answers]
        assert all(code in (200, 201) for code in statuses[:15]), statuses
        assert statuses[15:17] == [404, 404]
        assert statuses[17:] == [200, 200]
        async with postgres_engine.connect() as connection:
            runs = set(
                (
                    await connection.execute(
                        text("SELECT id FROM task_runs WHERE task_id = :t"), {"t": task["id"]}
                    )
                ).scalars()
            )
            payloads = (
                await connection.execute(text("SELECT payload FROM queue_messages"))
            ).scalars()
            messaged = [messages.decode(payload).run_id for payload in payloads]
        assert len(runs) == 12 + 1 + 2  # the singles, the key once, a keyless run per batch
        assert sorted(messaged) == sorted(runs)
    finally:
        async with postgres_engine.begin() as connection:
            await connection.execute(text("DELETE FROM queue_messages"))
        await wipe(postgres_engine)


@pytest.mark.postgres
async def test_a_trigger_takes_no_transaction_unless_a_gate_locks_a_row(
    postgres_engine: AsyncEngine,
) -> None:
    """On PostgreSQL a trigger is its reads and one insert — the run, its event and its
    message — each committing on its own (no ``BEGIN``, no ``COMMIT``); a task with a
    concurrency cap has its row locked while its runs are counted, so its triggers are
    written in a transaction (the statement unit refused the lock before sending it)."""
    began: list[object] = []

    def on_begin(connection: Any) -> None:
        # SQLAlchemy begins its bookkeeping in autocommit too; only this one sends BEGIN.
        if not connection.connection.dbapi_connection.autocommit:
            began.append(connection)

    queue = PostgresRunQueue(postgres_engine, listen=False)
    event.listen(postgres_engine.sync_engine, "begin", on_begin)
    try:
        async with running_api(postgres_engine, queue=queue) as api:
            alice = await api.user("alice")
            plain = await api.task(alice, name="plain")
            capped = await api.task(alice, name="capped", max_concurrent=1)
            began.clear()
            first = await api.client.post(
                f"/api/v1/tasks/{plain['id']}/trigger", headers=alice.headers
            )
            assert first.status_code == 201, first.text
            keyed = await api.client.post(
                f"/api/v1/tasks/{plain['id']}/trigger",
                headers={**alice.headers, "Idempotency-Key": "once"},
            )
            assert keyed.status_code == 201, keyed.text
            assert began == []  # an idempotency key's lookup is a plain read too
            second = await api.client.post(
                f"/api/v1/tasks/{capped['id']}/trigger", headers=alice.headers
            )
            assert second.status_code == 201, second.text
            assert len(began) == 1
        async with postgres_engine.connect() as connection:
            stored = await connection.execute(text("SELECT payload FROM queue_messages"))
            messaged = sorted(messages.decode(payload).run_id for payload in stored.scalars())
        assert messaged == sorted([first.json()["id"], keyed.json()["id"], second.json()["id"]])
    finally:
        event.remove(postgres_engine.sync_engine, "begin", on_begin)
        async with postgres_engine.begin() as connection:
            await connection.execute(text("DELETE FROM queue_messages"))
        await wipe(postgres_engine)
