"""``/api/v1/runs``: list, get, cancel, retry, output and events; runs are driven to their
outcomes through the HTTP worker protocol."""

from __future__ import annotations

from typing import Any

from api_harness import Api, Caller

from scheduler_domain.accounts import Role


async def finish(
    api: Api, worker: Caller, run_id: str, status: str, **outcome: Any
) -> dict[str, Any]:
    """Register a worker, claim ``run_id`` and report ``status`` for it."""
    registered = await api.client.post(
        "/api/v1/worker/register",
        json={"name": "w", "hostname": "h", "pid": 1, "queues": ["default"], "capacity": 1},
        headers=worker.headers,
    )
    worker_id = registered.json()["id"]
    claimed = await api.client.post(
        "/api/v1/worker/claim?wait=0", json={"worker_id": worker_id}, headers=worker.headers
    )
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["run"]["id"] == run_id
    completed = await api.client.post(
        f"/api/v1/worker/runs/{run_id}/complete",
        json={
            "worker_id": worker_id,
            "token": claimed.json()["token"],
            "status": status,
            **outcome,
        },
        headers=worker.headers,
    )
    assert completed.status_code == 200, completed.text
    return dict(completed.json())


async def test_run_exposes_its_fields_but_not_its_output(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    run = await api.run(alice, task["id"])

    response = await api.client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers)

    body = response.json()
    for field in (
        "id", "task_id", "attempt", "status", "trigger", "scheduled_for", "started_at",
        "finished_at", "worker_id", "result", "error", "queued_at", "not_before", "retry_of",
        "created_at",
    ):  # fmt: skip
        assert field in body, field
    assert "output" not in body
    assert body["trigger"] == "manual"
    assert body["attempt"] == 1


async def test_output_and_events_of_a_finished_run(api: Api, alice: Caller) -> None:
    worker = await api.user("worker-1", Role.WORKER)
    task = await api.task(alice)
    run = await api.run(alice, task["id"])

    settled = await finish(
        api, worker, run["id"], "succeeded", result={"exit_code": 0}, output="hello\n"
    )
    output = await api.client.get(f"/api/v1/runs/{run['id']}/output", headers=alice.headers)
    events = await api.client.get(f"/api/v1/runs/{run['id']}/events", headers=alice.headers)

    assert settled["run"]["status"] == "succeeded"
    assert settled["retry"] is None
    assert output.json() == {
        "run_id": run["id"],
        "status": "succeeded",
        "output": "hello\n",
        "finished": True,
    }
    assert [e["to_status"] for e in events.json()["items"]] == [
        "pending",
        "queued",
        "running",
        "succeeded",
    ]


async def test_cancel_then_retry(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    run = await api.run(alice, task["id"])

    cancelled = await api.client.post(
        f"/api/v1/runs/{run['id']}/cancel", json={"reason": "not today"}, headers=alice.headers
    )
    again = await api.client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers)
    retried = await api.client.post(f"/api/v1/runs/{run['id']}/retry", headers=alice.headers)

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"] == "not today"
    assert again.status_code == 409
    assert retried.status_code == 201
    assert retried.json()["retry_of"] == run["id"]
    assert retried.json()["attempt"] == 2
    assert retried.json()["trigger"] == "retry"


async def test_retry_of_a_successful_run_conflicts(api: Api, alice: Caller) -> None:
    worker = await api.user("worker-1", Role.WORKER)
    task = await api.task(alice)
    run = await api.run(alice, task["id"])
    await finish(api, worker, run["id"], "succeeded")

    response = await api.client.post(f"/api/v1/runs/{run['id']}/retry", headers=alice.headers)

    assert response.status_code == 409
    assert response.json()["field"] == "status"


async def test_failed_run_gets_its_retry_by_policy(api: Api, alice: Caller) -> None:
    worker = await api.user("worker-1", Role.WORKER)
    task = await api.task(alice, retry={"max_attempts": 2, "base_delay_seconds": 60})
    run = await api.run(alice, task["id"])

    settled = await finish(api, worker, run["id"], "failed", error="boom")

    assert settled["run"]["status"] == "failed"
    assert settled["retry"]["attempt"] == 2
    assert settled["retry"]["not_before"] is not None


async def test_list_filters_by_status_task_and_time(api: Api, alice: Caller) -> None:
    first = await api.task(alice, "first")
    second = await api.task(alice, "second")
    kept = await api.run(alice, first["id"])
    dropped = await api.run(alice, second["id"])
    await api.client.post(f"/api/v1/runs/{dropped['id']}/cancel", headers=alice.headers)

    by_status = await api.client.get("/api/v1/runs?status=cancelled", headers=alice.headers)
    by_task = await api.client.get(f"/api/v1/runs?task_id={first['id']}", headers=alice.headers)
    later = await api.client.get(
        "/api/v1/runs", params={"created_after": "2999-01-01T00:00:00Z"}, headers=alice.headers
    )
    naive = await api.client.get(
        "/api/v1/runs", params={"created_after": "2020-01-01T00:00:00"}, headers=alice.headers
    )

    assert [r["id"] for r in by_status.json()["items"]] == [dropped["id"]]
    assert [r["id"] for r in by_task.json()["items"]] == [kept["id"]]
    assert later.json()["items"] == []
    assert naive.status_code == 422
    assert naive.json()["field"] == "created_after"


async def test_list_filters_by_queue_and_refuses_a_bad_queue_name(api: Api, alice: Caller) -> None:
    plain = await api.task(alice, "plain")
    reports = await api.task(alice, "reports", queue="reports")
    await api.run(alice, plain["id"])
    in_reports = await api.run(alice, reports["id"])

    listed = await api.client.get("/api/v1/runs?queue=reports", headers=alice.headers)
    unknown = await api.client.get("/api/v1/runs?queue=nowhere", headers=alice.headers)
    bad = await api.client.get("/api/v1/runs", params={"queue": "a b"}, headers=alice.headers)
    dry = await api.client.post(
        "/api/v1/runs/bulk",
        json={"action": "cancel", "filter": {"queue": "reports"}, "dry_run": True},
        headers=alice.headers,
    )

    assert [r["id"] for r in listed.json()["items"]] == [in_reports["id"]]
    assert unknown.json()["items"] == []
    assert bad.status_code == 422
    assert bad.json()["field"] == "queue"
    assert dry.status_code == 200, dry.text
    assert dry.json()["matched"] == 1


async def test_unknown_status_filter_names_the_parameter(api: Api, alice: Caller) -> None:
    response = await api.client.get("/api/v1/runs?status=exploded", headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["field"] == "status"


async def test_runs_are_paginated(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    runs = [await api.run(alice, task["id"]) for _ in range(3)]

    first = await api.client.get("/api/v1/runs?limit=2", headers=alice.headers)
    second = await api.client.get(
        "/api/v1/runs", params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=alice.headers,
    )  # fmt: skip

    seen = [r["id"] for r in first.json()["items"] + second.json()["items"]]
    assert seen == [r["id"] for r in reversed(runs)]
    assert second.json()["next_cursor"] is None


async def test_viewer_cannot_cancel(api: Api, alice: Caller) -> None:
    viewer = await api.user("vera", Role.VIEWER)
    response = await api.client.post(
        "/api/v1/runs/01900000-0000-7000-8000-000000000000/cancel", headers=viewer.headers
    )

    assert response.status_code == 403
