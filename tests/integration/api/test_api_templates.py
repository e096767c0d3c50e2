"""``/api/v1/templates`` and subscriptions through HTTP, on SQLite and PostgreSQL: who may do
what, 422s naming the field (subscription, trigger, batch), a template change reaching the
subscriptions in the database, and runs showing what they ran with."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_harness import Api, Caller, running_api, wipe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(90)

TEMPLATE: dict[str, Any] = {
    "name": "weather",
    "executor": "http",
    "params": {"url": "https://api.example.com/weather?city={{city}}&units={{units}}"},
    "params_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "units": {"enum": ["metric", "imperial"], "default": "metric"},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
    "schedule": {"interval_seconds": 3600},
    "schedule_bounds": {"min_interval_seconds": 300},
    "policies": {"queue": "vendor", "priority": 3},
}


@pytest.fixture
async def any_api(backend_engine: AsyncEngine) -> AsyncIterator[tuple[Api, AsyncEngine]]:
    """The API on SQLite, then on PostgreSQL."""
    async with running_api(backend_engine) as harness:
        yield harness, backend_engine
    await wipe(backend_engine)


async def _template(api: Api, caller: Caller, body: dict[str, Any] = TEMPLATE) -> Any:
    return await api.client.post("/api/v1/templates", json=body, headers=caller.headers)


async def test_templates_from_definition_to_runs(any_api: tuple[Api, AsyncEngine]) -> None:
    api, engine = any_api
    olga = await api.user("olga", Role.OPERATOR)
    alice = await api.user("alice")
    viewer = await api.user("vera", Role.VIEWER)

    refused = await _template(api, alice)
    assert refused.status_code == 403, refused.text
    created = await _template(api, olga)
    assert created.status_code == 201, created.text
    template = created.json()
    assert (template["version"], template["schedule_bounds"]["min_interval_seconds"]) == (1, 300)
    path = f"/api/v1/templates/{template['id']}"
    by_name = await api.client.get("/api/v1/templates/weather", headers=viewer.headers)
    assert by_name.json()["id"] == template["id"]

    subscribe = f"{path}/subscriptions"
    no_city = await api.client.post(subscribe, json={"params": {}}, headers=alice.headers)
    assert no_city.status_code == 422, no_city.text
    assert no_city.json()["field"] == "params.city"
    too_often = await api.client.post(
        subscribe,
        json={"params": {"city": "Oslo"}, "schedule": {"cron": "* * * * *"}},
        headers=alice.headers,
    )
    assert too_often.status_code == 422, too_often.text
    assert too_often.json()["field"] == "schedule"
    as_viewer = await api.client.post(
        subscribe, json={"params": {"city": "Oslo"}}, headers=viewer.headers
    )
    assert as_viewer.status_code == 403, as_viewer.text
    subscribed = await api.client.post(
        subscribe, json={"name": "oslo", "params": {"city": "Oslo"}}, headers=alice.headers
    )
    assert subscribed.status_code == 201, subscribed.text
    task = subscribed.json()
    assert task["template_id"] == template["id"]
    assert task["params"]["url"].endswith("city=Oslo&units=metric")
    listed = (await api.client.get("/api/v1/tasks", headers=alice.headers)).json()
    assert [t["name"] for t in listed["items"]] == ["oslo"]

    trigger = f"/api/v1/tasks/{task['id']}/trigger"
    bad = await api.client.post(trigger, json={"params": {"units": "K"}}, headers=alice.headers)
    assert bad.status_code == 422, bad.text
    assert bad.json()["field"] == "params.units"
    run = await api.client.post(
        trigger, json={"params": {"units": "imperial"}}, headers=alice.headers
    )
    assert run.status_code == 201, run.text
    shown = (await api.client.get(f"/api/v1/runs/{run.json()['id']}", headers=alice.headers)).json()
    assert shown["run_params"] == {"city": "Oslo", "units": "imperial"}
    assert shown["params"]["url"].endswith("units=imperial")
    assert (shown["template_id"], shown["template_version"]) == (template["id"], 1)

    changed = await api.client.patch(
        path,
        json={"params": {"url": "https://v2.example.com/{{city}}/{{units}}"}},
        headers={**olga.headers, "If-Match": '"1"'},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    stale = await api.client.patch(
        path, json={"description": "x"}, headers={**olga.headers, "If-Match": '"1"'}
    )
    assert stale.status_code == 409, stale.text
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT params, template_params, template_version FROM tasks WHERE id = :id"),
                {"id": task["id"]},
            )
        ).one()
    params, template_params, version = (
        *(value if isinstance(value, dict) else json.loads(value) for value in row[:2]),
        row[2],
    )
    assert params["url"] == "https://v2.example.com/Oslo/metric"
    assert version == 2
    assert template_params == {"city": "Oslo"}

    batch = await api.client.post(
        "/api/v1/runs/batch",
        json={
            "triggers": [
                {"task_id": task["id"], "params": {"city": ""}},
                {"task_id": task["id"], "params": {"city": "Rome"}},
            ]
        },
        headers=alice.headers,
    )
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["status"] for r in results] == ["refused", "created"]
    assert results[0]["error"]["field"] == "params.city"
    assert results[1]["run"]["template_version"] == 2
    assert results[1]["run"]["params"]["url"] == "https://v2.example.com/Rome/metric"

    in_use = await api.client.delete(path, headers=olga.headers)
    assert in_use.status_code == 409, in_use.text


async def test_bulk_subscription_from_a_file_of_users(any_api: tuple[Api, AsyncEngine]) -> None:
    api, _ = any_api
    admin = await api.user("root", Role.ADMIN)
    alice = await api.user("alice")
    await api.user("bob")
    template = (await _template(api, admin)).json()
    bulk = f"/api/v1/templates/{template['id']}/subscriptions/bulk"
    as_user = await api.client.post(
        bulk, json={"subscriptions": [{"params": {"city": "x"}}]}, headers=alice.headers
    )
    assert as_user.status_code == 403, as_user.text
    answer = await api.client.post(
        bulk,
        json={
            "subscriptions": [
                {"owner": "alice", "params": {"city": "Oslo"}},
                {"owner": "bob", "params": {"city": "Rome", "units": "kelvin"}},
                {"owner": "bob", "params": {"city": "Rome"}},
                {"owner": "ghost", "params": {"city": "Rome"}},
            ]
        },
        headers=admin.headers,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["created", "refused", "created", "refused"]
    assert [r["error"]["field"] for r in body["results"] if r["error"]] == ["params.units", "owner"]
    assert (body["created"], body["refused"]) == (2, 2)
    mine = (await api.client.get("/api/v1/tasks", headers=alice.headers)).json()["items"]
    assert [t["template_params"] for t in mine] == [{"city": "Oslo"}]


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "object", "properties": {"c": {"$ref": "http://127.0.0.1:9/x.json"}}},
         "params_schema.$ref"),
        ({"type": "object", "properties": {"c": {"minLength": "three"}}},
         "params_schema.properties.c.minLength"),
    ],
)  # fmt: skip
async def test_hostile_schemas_are_refused_naming_the_field(
    api: Api, admin: Caller, schema: dict[str, Any], field: str
) -> None:
    response = await _template(api, admin, {**TEMPLATE, "params_schema": schema})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_a_deeply_nested_schema_is_a_client_error(api: Api, admin: Caller) -> None:
    deep = '{"type": "object"}'
    for _ in range(2_000):
        deep = '{"type": "object", "properties": {"a": ' + deep + "}}"
    body = '{"name": "deep", "executor": "noop", "params_schema": ' + deep + "}"
    response = await api.client.post(
        "/api/v1/templates",
        content=body,
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text


async def test_subscriptions_made_during_a_template_change_end_at_its_version(
    any_api: tuple[Api, AsyncEngine],
) -> None:
    """A subscription created while the template changes either exists before the change
    (and is rewritten by it) or is made from the new version: none is left behind."""
    api, engine = any_api
    olga = await api.user("olga", Role.OPERATOR)
    users = [await api.user(f"user{i}") for i in range(6)]
    template = (await _template(api, olga)).json()
    path = f"/api/v1/templates/{template['id']}"

    async def subscribe(caller: Caller) -> Any:
        return await api.client.post(
            f"{path}/subscriptions", json={"params": {"city": "Oslo"}}, headers=caller.headers
        )

    async def change(n: int) -> Any:
        return await api.client.patch(
            path, json={"policies": {"priority": n}}, headers=olga.headers
        )

    answers = await asyncio.gather(
        *(subscribe(u) for u in users[:3]), change(5), *(subscribe(u) for u in users[3:]), change(6)
    )
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    final = (await api.client.get(path, headers=olga.headers)).json()
    assert final["version"] == 3
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT template_version, priority FROM tasks WHERE template_id = :id"),
                {"id": template["id"]},
            )
        ).all()
    assert len(rows) == 6
    assert {tuple(row) for row in rows} == {(3, final["policies"]["priority"])}
