"""``POST /api/v1/tasks/apply`` and ``GET /api/v1/tasks/export``: tasks as code over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import Api, Caller

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)

FILE: dict[str, Any] = {
    "version": 1,
    "tasks": [
        {
            "name": "report",
            "executor": "http",
            "params": {"url": "https://reports.example.org/nightly"},
            "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
            "depends_on": ["extract"],
        },
        {
            "name": "extract",
            "executor": "http",
            "params": {"url": "https://reports.example.org/extract"},
            "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
            "retry": {"max_attempts": 3},
        },
    ],
}


async def _apply(api: Api, caller: Caller, body: Any, **query: Any) -> Any:
    return await api.client.post(
        "/api/v1/tasks/apply", json=body, params=query, headers=caller.headers
    )


async def test_apply_creates_then_export_round_trips_as_a_no_op(api: Api, alice: Caller) -> None:
    dry = await _apply(api, alice, FILE, dry_run="true")
    assert dry.status_code == 200, dry.text
    assert dry.json()["summary"] == {"create": 2, "update": 0, "delete": 0, "unchanged": 0}
    listed = await api.client.get("/api/v1/tasks", headers=alice.headers)
    assert listed.json()["items"] == []

    applied = await _apply(api, alice, FILE)
    assert applied.status_code == 200, applied.text
    assert [(c["name"], c["action"]) for c in applied.json()["changes"]] == [
        ("extract", "create"),
        ("report", "create"),
    ]

    exported = await api.client.get("/api/v1/tasks/export", headers=alice.headers)
    assert exported.status_code == 200, exported.text
    document = exported.json()
    assert [t["name"] for t in document["tasks"]] == ["extract", "report"]
    assert document["tasks"][1]["depends_on"] == ["extract"]

    again = await _apply(api, alice, document, prune="true")
    assert again.json()["summary"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 2}


async def test_a_changed_file_answers_a_precise_diff(api: Api, alice: Caller) -> None:
    await _apply(api, alice, FILE)
    changed = {
        "tasks": [
            {**FILE["tasks"][0], "schedule": {"cron": "30 3 * * *", "timezone": "Europe/Berlin"}},
        ]
    }
    plan = await _apply(api, alice, changed, dry_run="true", prune="true")
    assert plan.status_code == 200, plan.text
    changes = {c["name"]: c for c in plan.json()["changes"]}
    assert changes["report"]["action"] == "update"
    (field,) = changes["report"]["fields"].items()
    assert field[0] == "schedule"
    assert (field[1]["before"]["cron"], field[1]["after"]["cron"]) == ("0 3 * * *", "30 3 * * *")
    assert changes["extract"]["action"] == "delete"
    # The plan was a dry run: extract is still there.
    listed = await api.client.get("/api/v1/tasks", headers=alice.headers)
    assert {t["name"] for t in listed.json()["items"]} == {"extract", "report"}


async def test_apply_acts_on_the_callers_own_tasks_only(
    api: Api, alice: Caller, bob: Caller
) -> None:
    await _apply(api, alice, FILE)
    # Bob's file of the same names creates Bob's tasks; his prune cannot reach Alice's.
    result = await _apply(api, bob, {"tasks": [FILE["tasks"][1]]}, prune="true")
    assert result.json()["summary"]["create"] == 1
    assert result.json()["summary"]["delete"] == 0
    listed = await api.client.get("/api/v1/tasks", headers=alice.headers)
    assert {t["name"] for t in listed.json()["items"]} == {"extract", "report"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tasks": [{"name": "a", "executor": "http", "priority": "x"}]}, "tasks[0].priority"),
        ({"tasks": [{"name": "a", "executor": "ftp"}]}, "tasks[0].executor"),
        ({"tasks": [{"name": "a", "executor": "noop", "secret_env": {"T": "v"}}]}, "secret_env"),
        ({"tasks": []}, None),
        ({"tasks": [], "junk": 1}, "junk"),
    ],
)
async def test_bad_files_get_422_naming_the_field(
    api: Api, alice: Caller, body: dict[str, Any], field: str | None
) -> None:
    response = await _apply(api, alice, body)
    if field is None:  # an empty file is a valid (empty) plan
        assert response.status_code == 200, response.text
        return
    assert response.status_code in (403, 422), response.text
    assert field in response.text


async def test_a_viewer_cannot_apply(api: Api) -> None:
    viewer = await api.user("vera", Role.VIEWER)
    response = await _apply(api, viewer, FILE)
    assert response.status_code == 403, response.text


async def test_export_writes_subscriptions_and_applying_it_recreates_them(
    api: Api, alice: Caller, admin: Caller
) -> None:
    template = {
        "name": "ping",
        "executor": "noop",
        "params": {"sleep_seconds": "{{n}}"},
        "params_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "schedule": {"interval_seconds": 3600},
    }
    made = await api.client.post("/api/v1/templates", json=template, headers=admin.headers)
    assert made.status_code == 201, made.text
    subscribed = await api.client.post(
        "/api/v1/templates/ping/subscriptions",
        json={"name": "my-ping", "params": {"n": 2}},
        headers=alice.headers,
    )
    assert subscribed.status_code == 201, subscribed.text
    exported = (await api.client.get("/api/v1/tasks/export", headers=alice.headers)).json()
    assert exported["tasks"] == []
    assert exported["subscriptions"] == [
        {"name": "my-ping", "template": "ping", "params": {"n": 2}, "enabled": True,
         "depends_on": [], "trigger_rule": "all_success"}
    ]  # fmt: skip
    gone = await api.client.delete(
        f"/api/v1/tasks/{subscribed.json()['id']}", headers=alice.headers
    )
    assert gone.status_code == 204
    recreated = await _apply(api, alice, exported)
    assert recreated.status_code == 200, recreated.text
    assert [(c["kind"], c["action"]) for c in recreated.json()["changes"]] == [
        ("subscription", "create")
    ]
    task = (await api.client.get("/api/v1/tasks", headers=alice.headers)).json()["items"][0]
    assert (task["template_params"], task["params"]) == ({"n": 2}, {"sleep_seconds": 2})
    again = await _apply(api, alice, exported)
    assert again.json()["summary"]["unchanged"] == 1
