"""Named shared limits and circuits over the API (SQLite): operators and admins write, every
other role but workers reads, bad input answers 422 naming the field (a name no limit has
too); a task and a queue take the limit by name and its use shows it; a limit still referenced
is not deleted (409 naming the referrers)."""

from __future__ import annotations

import pytest
from api_harness import Api

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)

LIMIT = {"rate": "100/s", "partition_by": "owner", "partition_rate": "5/m", "max_concurrency": 50}


async def test_limits_crud_roles_and_use(api: Api) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    alice = await api.user("alice", Role.USER)
    viewer = await api.user("vera", Role.VIEWER)

    refused = await api.client.put("/api/v1/limits/vendor", json=LIMIT, headers=alice.headers)
    assert refused.status_code == 403
    created = await api.client.put("/api/v1/limits/vendor", json=LIMIT, headers=operator.headers)
    assert created.status_code == 201, created.text
    assert created.json()["partition_rate"] == "5/m"
    again = await api.client.put("/api/v1/limits/vendor", json=LIMIT, headers=operator.headers)
    assert again.status_code == 200

    task = await api.task(alice, limits=["vendor"])
    assert task["limits"] == ["vendor"]
    run = await api.run(alice, task["id"])
    assert run["status"] == "queued"
    seen = await api.client.get("/api/v1/limits/vendor", headers=viewer.headers)
    assert seen.status_code == 200
    use = seen.json()["use"]
    assert (use["in_flight"], use["tasks"]) == (1, 1)
    assert use["in_flight_by_partition"] == {alice.id: 1}
    queue = await api.client.patch(
        "/api/v1/queues/etl",
        json={"limits": ["vendor"], "fairness": "fair", "fair_in_flight": 3},
        headers=operator.headers,
    )
    assert queue.status_code == 200, queue.text
    assert (queue.json()["limits"], queue.json()["fairness"]) == (["vendor"], "fair")
    listed = await api.client.get("/api/v1/limits", headers=viewer.headers)
    assert [x["use"]["queues"] for x in listed.json()["items"]] == [["etl"]]
    circuits = await api.client.get("/api/v1/circuits", headers=viewer.headers)
    assert circuits.status_code == 200
    assert circuits.json() == {"items": []}

    referenced = await api.client.delete("/api/v1/limits/vendor", headers=operator.headers)
    assert referenced.status_code == 409, referenced.text
    assert referenced.json()["field"] == "name"
    assert f"1 task(s): {task['name']}" in referenced.json()["detail"]
    assert "queue(s): etl" in referenced.json()["detail"]
    await api.client.delete(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    await api.client.patch("/api/v1/queues/etl", json={"limits": []}, headers=operator.headers)
    gone = await api.client.delete("/api/v1/limits/vendor", headers=operator.headers)
    assert gone.status_code == 204
    missing = await api.client.get("/api/v1/limits/vendor", headers=operator.headers)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate": "fast"}, "rate"),
        ({"partition_by": "owner"}, "partition_rate"),
        ({"partition_by": "team", "partition_rate": "1/s"}, "partition_by"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"cool_down_seconds": "soon"}, "cool_down_seconds"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_limits_answer_422_naming_the_field(
    api: Api, body: dict[str, object], field: str
) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    response = await api.client.put("/api/v1/limits/vendor", json=body, headers=operator.headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_bad_task_and_queue_references_answer_422(api: Api) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    alice = await api.user("alice", Role.USER)
    bad = await api.client.post(
        "/api/v1/tasks",
        json={"name": "t", "executor": "noop", "limits": ["no spaces"]},
        headers=alice.headers,
    )
    assert (bad.status_code, bad.json()["field"]) == (422, "limits")
    unknown = await api.client.post(
        "/api/v1/tasks",
        json={"name": "t", "executor": "noop", "limits": ["vendor-ap"]},
        headers=alice.headers,
    )
    assert (unknown.status_code, unknown.json()["field"]) == (422, "limits[0]")
    assert "no limit named 'vendor-ap'" in unknown.json()["detail"]
    unbound = await api.client.patch(
        "/api/v1/queues/etl", json={"limits": ["vendor-ap"]}, headers=operator.headers
    )
    assert (unbound.status_code, unbound.json()["field"]) == (422, "limits[0]")
    queue = await api.client.patch(
        "/api/v1/queues/etl", json={"fairness": "random"}, headers=operator.headers
    )
    assert (queue.status_code, queue.json()["field"]) == (422, "fairness")


async def test_a_tasks_file_defines_limits_and_refuses_a_missing_one(api: Api) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    document = {
        "limits": [{"name": "vendor", "rate": "10/s"}],
        "tasks": [{"name": "call", "executor": "noop", "limits": ["vendor"]}],
    }
    applied = await api.client.post("/api/v1/tasks/apply", json=document, headers=operator.headers)
    assert applied.status_code == 200, applied.text
    assert [(c["kind"], c["action"]) for c in applied.json()["changes"]] == [
        ("limit", "create"),
        ("task", "create"),
    ]
    again = await api.client.post("/api/v1/tasks/apply", json=document, headers=operator.headers)
    assert again.json()["summary"]["unchanged"] == 2
    typo = {"tasks": [{"name": "call", "executor": "noop", "limits": ["vendr"]}]}
    refused = await api.client.post("/api/v1/tasks/apply", json=typo, headers=operator.headers)
    assert (refused.status_code, refused.json()["field"]) == (422, "tasks[0].limits[0]")
