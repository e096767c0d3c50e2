"""Teams through the API: ``/api/v1/teams`` itself, and the team rule at every endpoint that
shows or changes a task or a run (a table over them, checked complete against the OpenAPI
document), the lists, batch and bulk, the console and the event stream. Outsiders get 404,
viewers read and get 403 on changes, editors change; a membership change counts from the
member's very next request (the credential cache is invalidated)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from api_harness import Api, Caller
from console_client import browser

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(120)


async def _ok(response: Any, *codes: int) -> Any:
    assert response.status_code in (codes or (200,)), response.text
    return response.json() if response.content else None


@dataclass
class Crew:
    """alice (admin of team ``ops``), bob (editor), carol (a ``user`` who is a team viewer),
    vera (a global ``viewer``, team viewer), mallory (no member)."""

    team: dict[str, Any]
    alice: Caller
    bob: Caller
    carol: Caller
    vera: Caller
    mallory: Caller


async def _member(api: Api, admin: Caller, team: str, user: str, role: str) -> dict[str, Any]:
    response = await api.client.post(
        f"/api/v1/teams/{team}/members", json={"user": user, "role": role}, headers=admin.headers
    )
    return dict(await _ok(response))


@pytest.fixture
async def crew(api: Api) -> Crew:
    alice = await api.user("alice", Role.USER)
    bob = await api.user("bob", Role.USER)
    carol = await api.user("carol", Role.USER)
    vera = await api.user("vera", Role.VIEWER)
    mallory = await api.user("mallory", Role.USER)
    team = await _ok(
        await api.client.post("/api/v1/teams", json={"name": "ops"}, headers=alice.headers), 201
    )
    await _member(api, alice, "ops", "bob", "editor")
    await _member(api, alice, "ops", "carol", "viewer")
    await _member(api, alice, "ops", vera.id, "viewer")
    return Crew(team, alice, bob, carol, vera, mallory)


async def test_team_lifecycle_members_roles_and_refusals(api: Api, crew: Crew) -> None:
    c = crew
    assert c.team["name"] == "ops"
    assert c.team["role"] == "admin"
    assert not c.team["personal"]

    mine = await _ok(await api.client.get("/api/v1/teams", headers=c.bob.headers))
    assert {(t["name"], t["role"]) for t in mine["items"]} == {("ops", "editor"), ("@bob", "admin")}
    shown = await _ok(await api.client.get("/api/v1/teams/ops", headers=c.carol.headers))
    assert {m["username"]: m["role"] for m in shown["members"]} == {
        "alice": "admin",
        "bob": "editor",
        "carol": "viewer",
        "vera": "viewer",
    }
    # Outsiders: not found, by name or id, for every team operation.
    for method, path, body in (
        ("GET", "/api/v1/teams/ops", None),
        ("GET", f"/api/v1/teams/{c.team['id']}", None),
        ("DELETE", "/api/v1/teams/ops", None),
        ("POST", "/api/v1/teams/ops/members", {"user": "mallory", "role": "admin"}),
        ("PATCH", "/api/v1/teams/ops/members/bob", {"role": "viewer"}),
        ("DELETE", "/api/v1/teams/ops/members/bob", None),
    ):
        refused = await api.client.request(method, path, json=body, headers=c.mallory.headers)
        assert refused.status_code == 404, (method, path, refused.text)
    # Members who are no team admin may not manage members.
    for who in (c.bob, c.carol):
        refused = await api.client.post(
            "/api/v1/teams/ops/members",
            json={"user": "mallory", "role": "viewer"},
            headers=who.headers,
        )
        assert refused.status_code == 403, refused.text
    # Bad input names the field.
    for body, field in (
        ({"user": "bob", "role": "owner"}, "role"),
        ({"user": "nobody-here", "role": "viewer"}, "user"),
    ):
        refused = await api.client.post(
            "/api/v1/teams/ops/members", json=body, headers=c.alice.headers
        )
        assert refused.status_code in (404, 422), refused.text
        assert refused.json()["field"] == field, refused.text
    taken = await api.client.post("/api/v1/teams", json={"name": "OPS"}, headers=c.bob.headers)
    assert taken.status_code == 409, taken.text
    assert taken.json()["field"] == "name", taken.text
    bad = await api.client.post("/api/v1/teams", json={"name": "@bob"}, headers=c.bob.headers)
    assert bad.status_code == 422, bad.text
    assert bad.json()["field"] == "name", bad.text
    viewer_creates = await api.client.post(
        "/api/v1/teams", json={"name": "mine"}, headers=c.vera.headers
    )
    assert viewer_creates.status_code == 403, viewer_creates.text

    # "user" is the name for editor; a team keeps one admin.
    promoted = await api.client.patch(
        "/api/v1/teams/ops/members/carol", json={"role": "user"}, headers=c.alice.headers
    )
    assert {m["username"]: m["role"] for m in (await _ok(promoted))["members"]}["carol"] == "editor"
    last_admin = await api.client.patch(
        "/api/v1/teams/ops/members/alice", json={"role": "editor"}, headers=c.alice.headers
    )
    assert last_admin.status_code == 409, last_admin.text
    leaves = await api.client.delete("/api/v1/teams/ops/members/alice", headers=c.alice.headers)
    assert leaves.status_code == 409, leaves.text
    # A member may leave on their own.
    await _ok(await api.client.delete("/api/v1/teams/ops/members/carol", headers=c.carol.headers))
    gone = await api.client.get("/api/v1/teams/ops", headers=c.carol.headers)
    assert gone.status_code == 404, gone.text

    # A personal team is not shared, left or deleted.
    for method, path, body in (
        ("POST", "/api/v1/teams/@bob/members", {"user": "alice", "role": "viewer"}),
        ("DELETE", "/api/v1/teams/@bob", None),
    ):
        refused = await api.client.request(method, path, json=body, headers=c.bob.headers)
        assert refused.status_code == 409, (path, refused.text)

    # Deleted only when it owns no task.
    task = await api.task(c.bob, "in-ops", team="ops")
    busy = await api.client.delete("/api/v1/teams/ops", headers=c.alice.headers)
    assert busy.status_code == 409, busy.text
    assert "1 task" in busy.json()["detail"], busy.text
    await _ok(await api.client.delete(f"/api/v1/tasks/{task['id']}", headers=c.bob.headers), 204)
    by_editor = await api.client.delete("/api/v1/teams/ops", headers=c.bob.headers)
    assert by_editor.status_code == 403, by_editor.text
    await _ok(await api.client.delete("/api/v1/teams/ops", headers=c.alice.headers), 204)
    assert (await api.client.get("/api/v1/teams/ops", headers=c.alice.headers)).status_code == 404


#: (method, path, body, writes): every operation on one task or one run. ``{task}`` and
#: ``{run}`` are the team's task and a run of it.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, bool]] = [
    ("GET", "/api/v1/tasks/{task}", None, False),
    ("GET", "/api/v1/tasks/{task}/runs", None, False),
    ("GET", "/api/v1/tasks/{task}/schedule", None, False),
    ("GET", "/api/v1/tasks/{task}/dependencies", None, False),
    ("GET", "/api/v1/runs/{run}", None, False),
    ("GET", "/api/v1/runs/{run}/output", None, False),
    ("GET", "/api/v1/runs/{run}/events", None, False),
    ("GET", "/api/v1/events/page?task_id={task}&after=0-0", None, False),
    ("GET", "/api/v1/events/page?run_id={run}&after=0-0", None, False),
    ("PATCH", "/api/v1/tasks/{task}", {"priority": 7}, True),
    ("POST", "/api/v1/tasks/{task}/pause", None, True),
    ("POST", "/api/v1/tasks/{task}/resume", None, True),
    ("POST", "/api/v1/tasks/{task}/trigger", None, True),
    ("POST", "/api/v1/runs/{run}/cancel", None, True),
    ("POST", "/api/v1/runs/{run}/retry", None, True),
    ("DELETE", "/api/v1/tasks/{task}", None, True),
]


#: Operations on one subscription (a task made from a template): their own test below.
SUBSCRIPTION_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, bool]] = [
    ("PATCH", "/api/v1/subscriptions/{task}", {"params": {"city": "Bergen"}}, True),
]


def test_the_table_covers_every_operation_on_one_task_or_run(api_document: dict[str, Any]) -> None:
    covered = {
        (m, re.sub(r"\?.*", "", p).replace("{task}", "{task_id}").replace("{run}", "{run_id}"))
        for m, p, _, _ in ENDPOINTS + SUBSCRIPTION_ENDPOINTS
    }
    for path, item in api_document["paths"].items():
        on_one = "{task_id}" in path or "{run_id}" in path
        if not on_one or path.startswith("/api/v1/worker/"):
            continue  # the worker protocol is the worker role's (test_api_worker_trust)
        for method in item:
            if method in {"get", "post", "patch", "put", "delete"}:
                assert (method.upper(), path) in covered, (method, path)


@pytest.fixture
async def api_document(api: Api) -> dict[str, Any]:
    return dict((await api.client.get("/schema/openapi.json")).json())


async def _fresh(api: Api, crew: Crew, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task of team ops (made by alice) and a run of it, cancelled when the endpoint retries.
    Its name is long enough never to turn up by chance inside a page's random tokens (the
    tests look for it in what an outsider is shown: "t1" once matched a CSRF token)."""
    task = await api.task(crew.alice, f"ops-only-task-{n}", team="ops")
    run = await api.run(crew.alice, task["id"])
    return task, run


@pytest.mark.parametrize(("method", "path", "body", "writes"), ENDPOINTS)
async def test_the_team_rule_at_every_endpoint(
    api: Api, crew: Crew, method: str, path: str, body: dict[str, Any] | None, writes: bool
) -> None:
    c = crew
    task, run = await _fresh(api, c, 1)
    if path.endswith("/retry"):
        await _ok(
            await api.client.post(f"/api/v1/runs/{run['id']}/cancel", headers=c.alice.headers)
        )
    if path.endswith("/resume"):
        await _ok(
            await api.client.post(f"/api/v1/tasks/{task['id']}/pause", headers=c.alice.headers)
        )
    url = path.format(task=task["id"], run=run["id"])
    # (caller, expected status): outsiders never learn it exists; viewers (a "user" who views
    # the team, and a global viewer) read only; the editor changes.
    expected = [
        (c.mallory, 404),
        (c.carol, 403 if writes else 200),
        (c.vera, 403 if writes else 200),
        (c.bob, None),
    ]
    for caller, status in expected:
        response = await api.client.request(method, url, json=body, headers=caller.headers)
        if status is None:
            assert response.status_code in (200, 201, 204), (caller.user.username, response.text)
        else:
            assert response.status_code == status, (caller.user.username, url, response.text)
        if status == 404:
            assert task["name"] not in response.text


async def test_lists_show_the_teams_objects_to_members_only(api: Api, crew: Crew) -> None:
    c = crew
    task, run = await _fresh(api, c, 1)
    own = await api.task(c.mallory, "mallorys")
    for caller, sees in ((c.carol, True), (c.vera, True), (c.bob, True), (c.mallory, False)):
        tasks = await _ok(await api.client.get("/api/v1/tasks", headers=caller.headers))
        runs = await _ok(await api.client.get("/api/v1/runs", headers=caller.headers))
        events = await _ok(
            await api.client.get("/api/v1/events/page?after=0-0", headers=caller.headers)
        )
        assert (task["id"] in {t["id"] for t in tasks["items"]}) is sees, caller.user.username
        assert (run["id"] in {r["id"] for r in runs["items"]}) is sees, caller.user.username
        assert (task["id"] in {e["task_id"] for e in events["items"]}) is sees
    assert {
        t["id"]
        for t in (await _ok(await api.client.get("/api/v1/tasks", headers=c.mallory.headers)))[
            "items"
        ]
    } == {own["id"]}
    only_ops = await _ok(
        await api.client.get(f"/api/v1/tasks?team_id={c.team['id']}", headers=c.bob.headers)
    )
    assert [t["id"] for t in only_ops["items"]] == [task["id"]]
    assert task["team_id"] == c.team["id"]
    assert task["owner_id"] == c.alice.id
    assert run["team_id"] == c.team["id"]
    # Not a member: an empty list, not someone else's.
    peek = await api.client.get(f"/api/v1/tasks?team_id={c.team['id']}", headers=c.mallory.headers)
    assert (await _ok(peek))["items"] == []


async def test_putting_a_task_in_a_team_needs_editor_rights_there(api: Api, crew: Crew) -> None:
    c = crew
    for caller, status in ((c.mallory, 404), (c.carol, 403), (c.vera, 403)):
        response = await api.client.post(
            "/api/v1/tasks",
            json={"name": "x", "executor": "noop", "team": "ops"},
            headers=caller.headers,
        )
        assert response.status_code == status, (caller.user.username, response.text)
        if status == 404:
            assert response.json()["field"] == "team"
    bad = await api.client.post(
        "/api/v1/tasks", json={"name": "x", "executor": "noop", "team": ""}, headers=c.bob.headers
    )
    assert bad.status_code == 422, bad.text
    assert "team" in bad.text, bad.text
    personal = await api.task(c.bob, "own")
    assert personal["team_id"] == c.bob.id


async def test_moving_a_task_moves_its_runs_and_who_sees_them(api: Api, crew: Crew) -> None:
    c = crew
    mine = await api.task(c.bob, "bobs")
    run = await api.run(c.bob, mine["id"])
    assert (
        await api.client.get(f"/api/v1/runs/{run['id']}", headers=c.carol.headers)
    ).status_code == 404
    moved = await _ok(
        await api.client.patch(
            f"/api/v1/tasks/{mine['id']}", json={"team": "ops"}, headers=c.bob.headers
        )
    )
    assert moved["team_id"] == c.team["id"]
    assert moved["owner_id"] == c.bob.id
    seen = await _ok(await api.client.get(f"/api/v1/runs/{run['id']}", headers=c.carol.headers))
    assert seen["team_id"] == c.team["id"]
    team_runs = await _ok(await api.client.get("/api/v1/runs", headers=c.vera.headers))
    assert run["id"] in {r["id"] for r in team_runs["items"]}
    # A viewer may not move it back out; mallory's team is not the editor's to put it in.
    refused = await api.client.patch(
        f"/api/v1/tasks/{mine['id']}", json={"team": "@carol"}, headers=c.carol.headers
    )
    assert refused.status_code == 403, refused.text
    elsewhere = await api.client.patch(
        f"/api/v1/tasks/{mine['id']}", json={"team": "@mallory"}, headers=c.bob.headers
    )
    assert elsewhere.status_code == 404, elsewhere.text
    assert elsewhere.json()["field"] == "team", elsewhere.text
    events = await _ok(
        await api.client.get(
            f"/api/v1/events/page?task_id={mine['id']}&type=task.updated&after=0-0",
            headers=c.carol.headers,
        )
    )
    assert events["items"][-1]["detail"]["from_team"] == c.bob.id


async def test_batch_and_bulk_apply_the_team_rule(api: Api, crew: Crew) -> None:
    c = crew
    task, _ = await _fresh(api, c, 1)
    other = await api.task(c.mallory, "mallorys")
    answer = await _ok(
        await api.client.post(
            "/api/v1/runs/batch",
            json={"triggers": [{"task_id": task["id"]}, {"task_id": other["id"]}]},
            headers=c.carol.headers,
        )
    )
    assert [r["error"]["code"] for r in answer["results"]] == ["permission_denied", "not_found"]
    by_editor = await _ok(
        await api.client.post(
            "/api/v1/runs/batch",
            json={"triggers": [{"task_id": task["id"]}]},
            headers=c.bob.headers,
        )
    )
    assert by_editor["results"][0]["status"] == "created"

    # Bulk by filter selects only what the caller may change.
    async def paused_count(caller: Caller) -> int:
        dry = await api.client.post(
            "/api/v1/tasks/bulk",
            json={"action": "pause", "filter": {}, "dry_run": True},
            headers=caller.headers,
        )
        return int((await _ok(dry))["matched"])

    assert await paused_count(c.bob) == 1
    assert await paused_count(c.carol) == 0
    assert await paused_count(c.mallory) == 1  # her own only
    by_ids = await _ok(
        await api.client.post(
            "/api/v1/tasks/bulk",
            json={"action": "pause", "ids": [task["id"]], "wait_seconds": 5},
            headers=c.carol.headers,
        )
    )
    assert by_ids["results"][0]["outcome"] == "failed", by_ids


async def test_a_membership_change_counts_from_the_next_request(api: Api, crew: Crew) -> None:
    """The credential cache is on (5 s): the change must not wait for it."""
    c = crew
    task, _ = await _fresh(api, c, 1)
    url = f"/api/v1/tasks/{task['id']}"
    for _ in range(3):  # remembered by the cache
        assert (await api.client.get(url, headers=c.bob.headers)).status_code == 200
    demoted = await api.client.patch(
        "/api/v1/teams/ops/members/bob", json={"role": "viewer"}, headers=c.alice.headers
    )
    await _ok(demoted)
    refused = await api.client.patch(url, json={"priority": 1}, headers=c.bob.headers)
    assert refused.status_code == 403, refused.text
    await _ok(await api.client.delete("/api/v1/teams/ops/members/bob", headers=c.alice.headers))
    assert (await api.client.get(url, headers=c.bob.headers)).status_code == 404
    await _member(api, c.alice, "ops", "bob", "editor")
    await _ok(await api.client.patch(url, json={"priority": 1}, headers=c.bob.headers))


async def test_the_console_applies_the_team_rule(api: Api, crew: Crew) -> None:
    c = crew
    task, run = await _fresh(api, c, 1)
    async with browser(api) as viewer:
        await viewer.sign_in("carol")
        for path in (f"/ui/tasks/{task['id']}", f"/ui/runs/{run['id']}"):
            page = await viewer.page(path)
            assert page.status_code == 200, path
            assert task["name"] in page.text, path
            assert "Trigger now" not in page.text
            assert "Cancel run" not in page.text
        listing = await viewer.page("/ui/tasks")
        assert task["name"] in listing.text
        for action in (f"/ui/tasks/{task['id']}/trigger", f"/ui/runs/{run['id']}/cancel"):
            forged = await viewer.act(action, on=f"/ui/tasks/{task['id']}")
            assert forged.status_code == 403, (action, forged.text)
    async with browser(api) as editor:
        await editor.sign_in("bob")
        page = await editor.page(f"/ui/tasks/{task['id']}")
        assert "Trigger now" in page.text
        done = await editor.act(f"/ui/runs/{run['id']}/cancel", on=f"/ui/runs/{run['id']}")
        assert done.status_code in (200, 303), done.text
    async with browser(api) as outsider:
        await outsider.sign_in("mallory")
        for path in (f"/ui/tasks/{task['id']}", f"/ui/runs/{run['id']}"):
            assert (await outsider.page(path)).status_code == 404
        assert task["name"] not in (await outsider.page("/ui/tasks")).text
    after = await _ok(await api.client.get(f"/api/v1/runs/{run['id']}", headers=c.alice.headers))
    assert after["status"] == "cancelled"


async def test_an_apply_file_names_a_team_the_caller_may_fill(api: Api, crew: Crew) -> None:
    c = crew
    for caller, team, status in (
        (c.carol, "ops", 403),  # a viewer there
        (c.mallory, "ops", 404),  # no member
        (c.alice, "nope", 404),
    ):
        refused = await api.client.post(
            "/api/v1/tasks/apply",
            json={"tasks": [{"name": "x", "executor": "noop", "team": team}]},
            headers=caller.headers,
        )
        assert refused.status_code == status, refused.text
        assert refused.json()["field"] == "tasks[0].team", refused.text
    done = await api.client.post(
        "/api/v1/tasks/apply",
        json={"team": "ops", "tasks": [{"name": "x", "executor": "noop"}]},
        headers=c.bob.headers,
    )
    await _ok(done)
    listed = await _ok(await api.client.get("/api/v1/tasks", headers=c.vera.headers))
    assert [t["name"] for t in listed["items"]] == ["x"]


@pytest.mark.parametrize(("method", "path", "body", "writes"), SUBSCRIPTION_ENDPOINTS)
async def test_the_team_rule_on_a_teams_subscription(
    api: Api,
    crew: Crew,
    admin: Caller,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    writes: bool,
) -> None:
    c = crew
    template = await _ok(
        await api.client.post(
            "/api/v1/templates",
            json={
                "name": "weather",
                "executor": "noop",
                "params_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
            headers=admin.headers,
        ),
        201,
    )
    subscription = await _ok(
        await api.client.post(
            f"/api/v1/templates/{template['id']}/subscriptions",
            json={"name": "oslo", "team": "ops", "params": {"city": "Oslo"}},
            headers=c.alice.headers,
        ),
        201,
    )
    assert subscription["team_id"] == c.team["id"]
    url = path.format(task=subscription["id"])
    expected = [
        (c.mallory, 404),
        (c.carol, 403 if writes else 200),
        (c.vera, 403 if writes else 200),
        (c.bob, None),
    ]
    for caller, status in expected:
        response = await api.client.request(method, url, json=body, headers=caller.headers)
        if status is None:
            assert response.status_code in (200, 201, 204), (caller.user.username, response.text)
        else:
            assert response.status_code == status, (caller.user.username, url, response.text)


async def test_a_task_name_taken_in_the_team_answers_409_naming_name(api: Api, crew: Crew) -> None:
    body = {"name": "report", "executor": "noop", "team": "ops"}
    await _ok(await api.client.post("/api/v1/tasks", json=body, headers=crew.alice.headers), 201)
    taken = await api.client.post("/api/v1/tasks", json=body, headers=crew.bob.headers)
    assert taken.status_code == 409, taken.text
    assert taken.json()["field"] == "name"
    own = {"name": "report", "executor": "noop"}  # bob's personal team: free
    mine = await _ok(
        await api.client.post("/api/v1/tasks", json=own, headers=crew.bob.headers), 201
    )
    moved = await api.client.patch(
        f"/api/v1/tasks/{mine['id']}", json={"team": "ops"}, headers=crew.bob.headers
    )
    assert (moved.status_code, moved.json()["field"]) == (409, "name")
