"""``/api/v1/tasks``: the task lifecycle over HTTP, with the spec validated by parse_task_spec."""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import PAGE_CAP, Api, Caller

from scheduler_domain.accounts import Role

NIGHTLY = {
    "name": "nightly-report",
    "executor": "http",
    "params": {"url": "https://reports.example.org/nightly", "method": "POST"},
    "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
    "retry": {"max_attempts": 3},
    "timeout_seconds": 600,
    "depends_on": [],
}


async def test_create_accepts_the_hand_written_task_body(api: Api, alice: Caller) -> None:
    response = await api.client.post("/api/v1/tasks", json=NIGHTLY, headers=alice.headers)

    assert response.status_code == 201, response.text
    task = response.json()
    assert task["owner_id"] == alice.id
    assert task["schedule"]["cron"] == "0 2 * * *"
    assert task["retry"]["max_attempts"] == 3
    assert task["timeout_seconds"] == 600
    assert task["next_run_at"] is not None
    assert response.headers["location"] == f"/api/v1/tasks/{task['id']}"
    assert response.headers["etag"] == '"1"'


async def test_create_names_the_invalid_field(api: Api, alice: Caller) -> None:
    body = {**NIGHTLY, "retry": {"max_attempts": 0}}
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "retry.max_attempts"


async def test_create_refuses_a_bad_cron_expression(api: Api, alice: Caller) -> None:
    body = {**NIGHTLY, "schedule": {"cron": "every day", "timezone": "Europe/Berlin"}}
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["field"].startswith("schedule")


async def test_duplicate_name_conflicts(api: Api, alice: Caller) -> None:
    await api.task(alice, "same")
    response = await api.client.post(
        "/api/v1/tasks", json={"name": "same", "executor": "noop"}, headers=alice.headers
    )

    assert response.status_code == 409
    assert response.json()["field"] == "name"


async def test_get_update_and_delete(api: Api, alice: Caller) -> None:
    task = await api.task(alice, "editable")
    url = f"/api/v1/tasks/{task['id']}"

    fetched = await api.client.get(url, headers=alice.headers)
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "editable"

    patched = await api.client.patch(
        url, json={"priority": 9, "retry": {"max_attempts": 2}}, headers=alice.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["priority"] == 9
    assert patched.json()["retry"]["max_attempts"] == 2
    assert patched.json()["version"] == 2

    stale = await api.client.patch(
        url, json={"priority": 1}, headers={**alice.headers, "If-Match": '"1"'}
    )
    assert stale.status_code == 409
    assert stale.json()["field"] == "version"

    deleted = await api.client.delete(url, headers=alice.headers)
    assert deleted.status_code == 204
    assert (await api.client.get(url, headers=alice.headers)).status_code == 404


async def test_patch_refuses_server_fields_by_name(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    url = f"/api/v1/tasks/{task['id']}"
    for field, value in (("owner_id", "x"), ("status", "running"), ("id", "x"), ("version", 7)):
        response = await api.client.patch(url, json={field: value}, headers=alice.headers)
        assert response.status_code == 422, field
        assert response.json()["field"] == field


async def test_pause_and_resume(api: Api, alice: Caller) -> None:
    task = await api.task(alice, schedule={"interval_seconds": 60})
    url = f"/api/v1/tasks/{task['id']}"

    paused = await api.client.post(f"{url}/pause", headers=alice.headers)
    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    assert paused.json()["next_run_at"] is None

    resumed = await api.client.post(f"{url}/resume", headers=alice.headers)
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert resumed.json()["next_run_at"] is not None


async def test_list_is_paginated_and_filtered(api: Api, alice: Caller) -> None:
    for index in range(5):
        await api.task(alice, f"job-{index}", queue="reports" if index % 2 else "default")

    first = await api.client.get("/api/v1/tasks?limit=2", headers=alice.headers)
    assert first.status_code == 200
    page = first.json()
    assert len(page["items"]) == 2
    assert page["next_cursor"]
    second = await api.client.get(
        f"/api/v1/tasks?limit=2&cursor={page['next_cursor']}", headers=alice.headers
    )
    assert {t["name"] for t in second.json()["items"]}.isdisjoint(
        {t["name"] for t in page["items"]}
    )

    reports = await api.client.get("/api/v1/tasks?queue=reports", headers=alice.headers)
    assert {t["name"] for t in reports.json()["items"]} == {"job-1", "job-3"}
    prefixed = await api.client.get("/api/v1/tasks?name_prefix=job-4", headers=alice.headers)
    assert [t["name"] for t in prefixed.json()["items"]] == ["job-4"]


async def test_huge_limit_is_clamped_to_the_cap(api: Api, alice: Caller) -> None:
    response = await api.client.get("/api/v1/tasks?limit=1000000", headers=alice.headers)

    assert response.status_code == 200
    assert response.json()["limit"] == PAGE_CAP


async def test_invalid_cursor_is_a_validation_error(api: Api, alice: Caller) -> None:
    response = await api.client.get("/api/v1/tasks?cursor=%%%garbage", headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["field"] == "cursor"


async def test_trigger_is_idempotent_by_key(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    url = f"/api/v1/tasks/{task['id']}/trigger"
    headers = {**alice.headers, "Idempotency-Key": "deploy-42"}

    first = await api.client.post(url, headers=headers)
    again = await api.client.post(url, headers=headers)
    other = await api.client.post(url, headers={**alice.headers, "Idempotency-Key": "deploy-43"})

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert first.json()["idempotency_key"] == "deploy-42"
    assert other.json()["id"] != first.json()["id"]


async def test_trigger_publishes_the_run_at_once(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    run = await api.run(alice, task["id"])

    fetched = await api.client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers)

    assert fetched.json()["status"] == "queued"
    assert await api.resources.queue.depth("default") == 1


async def test_task_runs_are_listed_newest_first(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    older = await api.run(alice, task["id"])
    newer = await api.run(alice, task["id"])

    response = await api.client.get(f"/api/v1/tasks/{task['id']}/runs", headers=alice.headers)

    assert [r["id"] for r in response.json()["items"]] == [newer["id"], older["id"]]


async def test_schedule_preview_is_in_the_tasks_time_zone(api: Api, alice: Caller) -> None:
    task = await api.task(alice, schedule={"cron": "0 2 * * *", "timezone": "Europe/Berlin"})

    response = await api.client.get(
        f"/api/v1/tasks/{task['id']}/schedule?n=3", headers=alice.headers
    )

    preview = response.json()
    assert response.status_code == 200
    assert preview["timezone"] == "Europe/Berlin"
    assert len(preview["next_fire_times"]) == 3
    assert all("T02:00:00+0" in t for t in preview["next_fire_times"])
    assert preview["recent_decisions"] == []
    assert preview["day_rule"] == (
        "day-of-month AND day-of-week (a field starting with '*' is unrestricted)"
    )


async def test_schedule_preview_bounds_n(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    response = await api.client.get(
        f"/api/v1/tasks/{task['id']}/schedule?n=1000", headers=alice.headers
    )

    assert response.status_code == 422
    assert response.json()["field"] == "n"


async def test_dependencies_show_upstreams_and_dependents(api: Api, alice: Caller) -> None:
    extract = await api.task(alice, "extract")
    load = await api.task(alice, "load", depends_on=[extract["id"]])

    up = await api.client.get(f"/api/v1/tasks/{load['id']}/dependencies", headers=alice.headers)
    down = await api.client.get(
        f"/api/v1/tasks/{extract['id']}/dependencies", headers=alice.headers
    )

    assert [t["name"] for t in up.json()["upstreams"]] == ["extract"]
    assert [t["name"] for t in down.json()["dependents"]] == ["load"]
    refused = await api.client.delete(f"/api/v1/tasks/{extract['id']}", headers=alice.headers)
    assert refused.status_code == 409


async def test_dependency_cycles_are_refused_naming_the_cycle(api: Api, alice: Caller) -> None:
    first = await api.task(alice, "a")
    second = await api.task(alice, "b", depends_on=[first["id"]])

    response = await api.client.patch(
        f"/api/v1/tasks/{first['id']}", json={"depends_on": [second["id"]]}, headers=alice.headers
    )

    assert response.status_code == 422
    assert response.json()["field"] == "depends_on"
    assert "a -> b -> a" in response.json()["detail"] or "b -> a -> b" in response.json()["detail"]


async def test_viewer_reads_but_cannot_write(api: Api, alice: Caller) -> None:
    viewer = await api.user("vera", Role.VIEWER)

    listed = await api.client.get("/api/v1/tasks", headers=viewer.headers)
    created = await api.client.post(
        "/api/v1/tasks", json={"name": "x", "executor": "noop"}, headers=viewer.headers
    )

    assert listed.status_code == 200
    assert created.status_code == 403
    assert created.json()["code"] == "permission-denied"


async def test_operator_sees_and_changes_everyones_tasks(api: Api, alice: Caller) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    task = await api.task(alice)

    listed = await api.client.get(f"/api/v1/tasks?owner_id={alice.id}", headers=operator.headers)
    paused = await api.client.post(f"/api/v1/tasks/{task['id']}/pause", headers=operator.headers)

    assert [t["id"] for t in listed.json()["items"]] == [task["id"]]
    assert paused.status_code == 200


@pytest.mark.parametrize(
    "schedule",
    [
        {"at": "9999-12-31T23:59:59-14:00"},
        {"at": "0001-01-01T00:00:00+14:00"},
        {"interval_seconds": 60, "anchor": "0001-01-01T00:00:00+14:00"},
        {"interval_seconds": 10**20},
    ],
)
async def test_out_of_range_times_are_client_errors(
    api: Api, alice: Caller, schedule: dict[str, Any]
) -> None:
    response = await api.client.post(
        "/api/v1/tasks", json={"name": "x", "executor": "noop", "schedule": schedule},
        headers=alice.headers,
    )  # fmt: skip

    assert response.status_code == 422


async def test_a_user_is_refused_a_shell_task_with_the_executor_named(
    api: Api, alice: Caller
) -> None:
    body = {"name": "sneaky", "executor": "shell", "params": {"argv": ["id"]}}
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)

    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["field"] == "executor"
    assert "'shell'" in problem["detail"]
    assert "'user'" in problem["detail"]


async def test_a_user_is_refused_a_python_task(api: Api, alice: Caller) -> None:
    body = {"name": "eval", "executor": "python", "params": {"callable": "builtins:eval"}}
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)
    assert response.status_code == 403, response.text


async def test_an_admin_may_create_a_shell_task_but_no_unregistered_callable(
    api: Api, admin: Caller
) -> None:
    shell = {"name": "backup", "executor": "shell", "params": {"argv": ["true"]}}
    response = await api.client.post("/api/v1/tasks", json=shell, headers=admin.headers)
    assert response.status_code == 201, response.text

    for n, target in enumerate(("builtins:eval", "os:system", "importlib:import_module")):
        body = {"name": f"py{n}", "executor": "python", "params": {"callable": target}}
        response = await api.client.post("/api/v1/tasks", json=body, headers=admin.headers)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "params.callable"


async def test_a_user_may_not_patch_a_task_into_a_shell_task(api: Api, alice: Caller) -> None:
    task = await api.task(alice, "harmless")
    response = await api.client.patch(
        f"/api/v1/tasks/{task['id']}",
        json={"executor": "shell", "params": {"argv": ["id"]}},
        headers=alice.headers,
    )
    assert response.status_code == 403, response.text


@pytest.mark.parametrize(
    "rule", ["all_failed", "one_failed", "none_failed", "none_skipped", "always"]
)
async def test_airflows_trigger_rules_are_accepted(api: Api, alice: Caller, rule: str) -> None:
    upstream = await api.task(alice, "up")
    body = {
        "name": "down",
        "executor": "noop",
        "depends_on": [upstream["id"]],
        "trigger_rule": rule,
    }
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)

    assert response.status_code == 201, response.text
    assert response.json()["trigger_rule"] == rule


async def test_an_unknown_trigger_rule_is_refused_by_name(api: Api, alice: Caller) -> None:
    body = {"name": "down", "executor": "noop", "trigger_rule": "one_skipped"}
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["field"] == "trigger_rule"


async def test_depends_on_accepts_names_and_stores_ids(api: Api, alice: Caller) -> None:
    extract = await api.task(alice, "extract")
    clean = await api.task(alice, "clean")
    body = {"name": "load", "executor": "noop", "depends_on": ["extract", clean["id"]]}
    created = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)
    patched = await api.client.patch(
        f"/api/v1/tasks/{clean['id']}", json={"depends_on": ["extract"]}, headers=alice.headers
    )

    assert created.status_code == 201, created.text
    assert created.json()["depends_on"] == [extract["id"], clean["id"]]
    assert patched.status_code == 200, patched.text
    assert patched.json()["depends_on"] == [extract["id"]]


async def test_depends_on_names_only_tasks_the_caller_sees(api: Api, alice: Caller) -> None:
    bob = await api.user("bob")
    await api.task(bob, "bobs-extract")
    body = {"name": "load", "executor": "noop", "depends_on": ["bobs-extract"]}
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["field"] == "depends_on"
    assert "does not exist" in response.json()["detail"]


async def test_depends_on_prefers_the_callers_own_task_of_that_name(
    api: Api, alice: Caller
) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    await api.task(alice, "extract")
    own = await api.task(operator, "extract")
    body = {"name": "load", "executor": "noop", "depends_on": ["extract"]}
    response = await api.client.post("/api/v1/tasks", json=body, headers=operator.headers)

    assert response.status_code == 201, response.text
    assert response.json()["depends_on"] == [own["id"]]


async def test_a_name_of_several_owners_tasks_asks_for_the_id(api: Api, alice: Caller) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    bob = await api.user("bob")
    alices = await api.task(alice, "extract")
    await api.task(bob, "extract")
    ambiguous = {"name": "load", "executor": "noop", "depends_on": ["extract"]}
    by_id = {**ambiguous, "depends_on": [alices["id"]]}
    refused = await api.client.post("/api/v1/tasks", json=ambiguous, headers=operator.headers)
    accepted = await api.client.post("/api/v1/tasks", json=by_id, headers=operator.headers)

    assert refused.status_code == 422
    assert refused.json()["field"] == "depends_on"
    assert "give the task's id" in refused.json()["detail"]
    assert accepted.status_code == 201, accepted.text


async def test_a_name_and_the_id_of_one_task_are_listed_twice(api: Api, alice: Caller) -> None:
    extract = await api.task(alice, "extract")
    body = {"name": "load", "executor": "noop", "depends_on": ["extract", extract["id"]]}
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["field"] == "depends_on"


async def test_a_manual_run_may_name_its_logical_time(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    url = f"/api/v1/tasks/{task['id']}/trigger"
    body = {"logical_time": "2026-01-01T03:00:00+01:00"}

    first = await api.client.post(url, json=body, headers=alice.headers)
    again = await api.client.post(url, json=body, headers=alice.headers)
    now = await api.client.post(url, headers=alice.headers)

    assert first.status_code == 201, first.text
    assert first.json()["scheduled_for"] == "2026-01-01T02:00:00Z"
    assert first.json()["trigger"] == "manual"
    assert again.status_code == 409
    assert again.json()["field"] == "logical_time"
    assert now.status_code == 201
    assert now.json()["scheduled_for"] > "2026-01-01T02:00:00Z"


@pytest.mark.parametrize(
    "logical_time",
    [
        "2026-01-01T03:00:00",  # no offset
        "yesterday",
        "9999-12-31T23:59:59-14:00",  # in the future, and out of range in UTC
        "2999-01-01T00:00:00Z",  # in the future
        12,
        "2026-01-01T03:00:00Z" + " " * 80,
    ],
)
async def test_a_bad_logical_time_is_refused_by_name(
    api: Api, alice: Caller, logical_time: Any
) -> None:
    task = await api.task(alice)
    response = await api.client.post(
        f"/api/v1/tasks/{task['id']}/trigger",
        json={"logical_time": logical_time},
        headers=alice.headers,
    )

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "logical_time"


async def test_an_executor_no_worker_provides_is_refused_naming_the_known_ones(
    api: Api, admin: Caller
) -> None:
    body = {"name": "upload", "executor": "ftp", "params": {"host": "files.example.org"}}
    response = await api.client.post("/api/v1/tasks", json=body, headers=admin.headers)

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == "executor"
    assert "'ftp'" in problem["detail"]
    assert "http, noop, python, shell" in problem["detail"]
