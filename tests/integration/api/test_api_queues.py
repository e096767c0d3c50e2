"""Queues you can steer over the API: pause, resume, purge and limits, operators and admins only,
bad input answered 422 naming the field (SQLite here; the same flows on PostgreSQL at the end)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from api_harness import Api, Caller, api_settings, running_api, wipe
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.dispatch.relay import RunRelay
from scheduler_domain.accounts import Role
from scheduler_infrastructure.config import DispatcherSettings
from scheduler_infrastructure.resources import build_relay


async def _run(api: Api, caller: Caller, run_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/runs/{run_id}", headers=caller.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _events(api: Api, caller: Caller, run_id: str) -> list[dict[str, Any]]:
    response = await api.client.get(f"/api/v1/runs/{run_id}/events", headers=caller.headers)
    return list(response.json()["items"])


async def _queue(api: Api, caller: Caller, name: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/queues/{name}", headers=caller.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _relay(api: Api) -> RunRelay:
    return build_relay(api.resources)


async def _pause_resume_purge(api: Api) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    alice = await api.user("alice", Role.USER)
    task = await api.task(alice, queue="reports")
    first = await api.run(alice, task["id"])
    assert first["status"] == "queued"

    paused = await api.client.post("/api/v1/queues/reports/pause", headers=operator.headers)

    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["paused"] is True
    assert body["updated_by"] == f"user:{operator.id}"
    assert body["updated_at"] is not None
    # The queued run went back to pending, with an event saying why; nothing failed.
    assert (await _run(api, alice, first["id"]))["status"] == "pending"
    last = (await _events(api, alice, first["id"]))[-1]
    assert (last["from_status"], last["to_status"]) == ("queued", "pending")
    assert last["detail"]["reason"] == "queue_paused"
    # A run triggered while paused waits too, even through the relay.
    second = await api.run(alice, task["id"])
    assert second["status"] == "pending"
    assert await _relay(api).relay_pending() == []
    assert (await _run(api, alice, second["id"]))["status"] == "pending"
    assert (await _queue(api, alice, "reports"))["paused"] is True

    resumed = await api.client.post("/api/v1/queues/reports/resume", headers=operator.headers)

    assert resumed.json()["paused"] is False
    published = await _relay(api).relay_pending()
    assert {m.run_id for m in published} == {first["id"], second["id"]}
    assert (await _run(api, alice, first["id"]))["status"] == "queued"

    # Purge: every pending and queued run of the queue, each with its cancel event.
    third = await api.run(alice, task["id"])
    other = await api.task(alice, "other", queue="elsewhere")
    untouched = await api.run(alice, other["id"])
    purged = await api.client.post("/api/v1/queues/reports/purge", headers=operator.headers)

    assert purged.status_code == 200, purged.text
    assert purged.json() == {"queue": "reports", "cancelled": 3}
    for run_id in (first["id"], second["id"], third["id"]):
        assert (await _run(api, alice, run_id))["status"] == "cancelled"
        cancel = (await _events(api, alice, run_id))[-1]
        assert cancel["to_status"] == "cancelled"
        assert cancel["actor"] == f"user:{operator.id}"
        assert cancel["detail"]["reason"] == "queue purged"
    assert (await _run(api, alice, untouched["id"]))["status"] == "queued"


async def test_pause_holds_runs_resume_releases_them_purge_cancels_them(api: Api) -> None:
    await _pause_resume_purge(api)


async def test_limits_are_set_shown_and_cleared(api: Api, admin: Caller, alice: Caller) -> None:
    await api.task(alice, queue="bulk")

    changed = await api.client.patch(
        "/api/v1/queues/bulk",
        json={"rate_limit": "10/s", "max_concurrency": 5},
        headers=admin.headers,
    )

    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["rate_limit"], body["max_concurrency"]) == ("10/s", 5)
    assert (body["effective_rate_limit"], body["rate_limit_source"]) == ("10/s", "queue")
    assert body["updated_by"] == f"user:{admin.id}"
    listed = await api.client.get("/api/v1/queues", headers=alice.headers)
    bulk = next(q for q in listed.json()["items"] if q["name"] == "bulk")
    assert (bulk["rate_limit"], bulk["max_concurrency"], bulk["paused"]) == ("10/s", 5, False)

    cleared = await api.client.patch(
        "/api/v1/queues/bulk", json={"rate_limit": None}, headers=admin.headers
    )

    assert (cleared.json()["rate_limit"], cleared.json()["max_concurrency"]) == (None, 5)
    assert cleared.json()["effective_rate_limit"] is None
    again = await api.client.patch(
        "/api/v1/queues/bulk", json={"max_concurrency": None}, headers=admin.headers
    )
    assert again.json()["max_concurrency"] is None


async def test_a_stored_limit_wins_over_the_configured_default(sqlite_engine: AsyncEngine) -> None:
    settings = replace(
        api_settings(), dispatcher=DispatcherSettings(queue_rate_limits=("metered=3/m",))
    )
    async with running_api(sqlite_engine, settings=settings) as api:
        try:
            admin = await api.user("root", Role.ADMIN)
            before = await _queue(api, admin, "metered")
            listed = await api.client.get("/api/v1/queues", headers=admin.headers)
            changed = await api.client.patch(
                "/api/v1/queues/metered", json={"rate_limit": "5/s"}, headers=admin.headers
            )
            cleared = await api.client.patch(
                "/api/v1/queues/metered", json={"rate_limit": None}, headers=admin.headers
            )
        finally:
            await wipe(sqlite_engine)

    assert (before["effective_rate_limit"], before["rate_limit_source"]) == ("3/m", "config")
    assert "metered" in {q["name"] for q in listed.json()["items"]}
    assert (changed.json()["effective_rate_limit"], changed.json()["rate_limit_source"]) == (
        "5/s",
        "queue",
    )
    assert cleared.json()["effective_rate_limit"] == "3/m"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.USER])
async def test_only_operators_and_admins_steer_queues(api: Api, role: Role) -> None:
    caller = await api.user("someone", role)
    calls = [
        api.client.post("/api/v1/queues/default/pause", headers=caller.headers),
        api.client.post("/api/v1/queues/default/resume", headers=caller.headers),
        api.client.post("/api/v1/queues/default/purge", headers=caller.headers),
        api.client.patch(
            "/api/v1/queues/default", json={"max_concurrency": 1}, headers=caller.headers
        ),
        api.client.patch(
            "/api/v1/queues/default", json={"max_concurrency": "x"}, headers=caller.headers
        ),
    ]
    for call in calls:
        response = await call
        assert response.status_code == 403, response.text
    shown = await api.client.get("/api/v1/queues/default", headers=caller.headers)
    assert shown.status_code == 200
    assert shown.json()["paused"] is False
    assert shown.json()["updated_by"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"rate_limit": 10}, "rate_limit"),
        ({"rate_limit": "0/s"}, "rate_limit"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": "5"}, "max_concurrency"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"max_concurrency": 1.5}, "max_concurrency"),
        ({"paused": True}, "paused"),
        ({}, "body"),
    ],
)
async def test_bad_settings_are_refused_naming_the_field(
    api: Api, admin: Caller, body: dict[str, Any], field: str
) -> None:
    response = await api.client.patch("/api/v1/queues/default", json=body, headers=admin.headers)

    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_bad_queue_names_are_refused_naming_the_field(api: Api, admin: Caller) -> None:
    calls = [
        api.client.get("/api/v1/queues/-bad", headers=admin.headers),
        api.client.post("/api/v1/queues/a%20b/pause", headers=admin.headers),
        api.client.post("/api/v1/queues/" + "q" * 101 + "/purge", headers=admin.headers),
        api.client.patch("/api/v1/queues/a*b", json={"rate_limit": "1/s"}, headers=admin.headers),
    ]
    for call in calls:
        response = await call
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "name"
    fine = await api.client.get("/api/v1/queues/a.b_c-1", headers=admin.headers)
    assert fine.status_code == 200


@pytest.fixture
async def pg_api(postgres_engine: AsyncEngine) -> AsyncIterator[Api]:
    async with running_api(postgres_engine) as harness:
        yield harness
    await wipe(postgres_engine)


@pytest.mark.postgres
async def test_pause_resume_purge_on_postgres(pg_api: Api) -> None:
    await _pause_resume_purge(pg_api)
