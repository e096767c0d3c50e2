"""``POST /api/v1/runs/bulk``, ``POST /api/v1/tasks/bulk`` and ``GET /api/v1/operations/{id}``."""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import Api, Caller

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)


async def _bulk(api: Api, caller: Caller, kind: str, body: dict[str, Any]) -> Any:
    return await api.client.post(f"/api/v1/{kind}/bulk", json=body, headers=caller.headers)


async def test_dry_run_counts_then_cancel_by_filter_answers_the_operation(
    api: Api, alice: Caller
) -> None:
    task = await api.task(alice)
    ids = [(await api.run(alice, task["id"]))["id"] for _ in range(5)]
    body = {"action": "cancel", "filter": {"task_id": task["id"], "status": ["pending", "queued"]}}

    dry = await _bulk(api, alice, "runs", {**body, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json() == {"action": "runs.cancel", "matched": 5}

    done = await _bulk(api, alice, "runs", body)
    assert done.status_code == 200, done.text
    operation = done.json()
    assert (operation["status"], operation["total"], operation["succeeded"]) == ("succeeded", 5, 5)
    assert done.headers["location"] == f"/api/v1/operations/{operation['id']}"
    for run_id in ids:
        run = await api.client.get(f"/api/v1/runs/{run_id}", headers=alice.headers)
        assert run.json()["status"] == "cancelled"
    followed = await api.client.get(done.headers["location"], headers=alice.headers)
    assert followed.status_code == 200
    assert followed.json()["done"] == 5


async def test_retry_by_ids_answers_per_item(api: Api, alice: Caller, bob: Caller) -> None:
    task = await api.task(alice)
    run = await api.run(alice, task["id"])
    await api.client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers)
    other = await api.run(alice, task["id"])
    bobs_task = await api.task(bob)
    bobs = await api.run(bob, bobs_task["id"])

    response = await _bulk(
        api, alice, "runs", {"action": "retry", "ids": [run["id"], other["id"], bobs["id"]]}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["outcome"] for r in results] == ["succeeded", "skipped", "failed"]
    assert "run_id" in results[0]
    # Bob's operation is not Alice's to see, and the other way round.
    location = response.headers["location"]
    assert (await api.client.get(location, headers=bob.headers)).status_code == 404


async def test_pause_tasks_by_filter(api: Api, alice: Caller) -> None:
    for name in ("etl-a", "etl-b", "web"):
        await api.task(alice, name=name)
    response = await _bulk(
        api, alice, "tasks", {"action": "pause", "filter": {"name_prefix": "etl-"}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["succeeded"] == 2
    listed = await api.client.get("/api/v1/tasks?enabled=false", headers=alice.headers)
    assert sorted(t["name"] for t in listed.json()["items"]) == ["etl-a", "etl-b"]


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("runs", {"action": "explode", "ids": ["x"]}, "action"),
        ("runs", {"action": "cancel"}, "ids"),
        ("runs", {"action": "cancel", "ids": ["a"], "filter": {}}, "ids"),
        ("runs", {"action": "cancel", "filter": {"status": ["sleeping"]}}, "filter.status"),
        ("runs", {"action": "cancel", "filter": {"colour": "red"}}, "colour"),
        ("runs", {"action": "cancel", "ids": ["x"], "wait_seconds": 99}, "wait_seconds"),
        ("tasks", {"action": "pause", "filter": {"created_after": "x"}}, "created_after"),
        ("runs", {"action": "cancel", "ids": [str(i) for i in range(1001)]}, "ids"),
    ],
)
async def test_bad_bulk_bodies_get_422_naming_the_field(
    api: Api, alice: Caller, kind: str, body: dict[str, Any], field: str
) -> None:
    response = await _bulk(api, alice, kind, body)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_a_viewer_may_not_start_one(api: Api) -> None:
    viewer = await api.user("vera", Role.VIEWER)
    response = await _bulk(api, viewer, "runs", {"action": "cancel", "ids": ["x"]})
    assert response.status_code == 403, response.text
