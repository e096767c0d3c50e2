"""Malformed input is the client's fault, answered 4xx naming the field, never 500: bodies that
are not UTF-8 or nest without end, cursors the server did not make, and the document stating
what the server enforces (closed objects, cursor format, password length)."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from api_harness import Api, Caller

from scheduler_api.params import CURSOR_PATTERN
from scheduler_api.request_checks import MAX_JSON_DEPTH, json_depth_exceeds

pytestmark = pytest.mark.timeout(60)

JSON = {"content-type": "application/json"}
LISTS = (
    "/api/v1/tasks",
    "/api/v1/runs",
    "/api/v1/users",
    "/api/v1/workers",
    "/api/v1/api-keys",
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def post(api: Api, caller: Caller | None, path: str, body: bytes) -> Any:
    headers = {**JSON, **(caller.headers if caller else {})}
    return await api.client.post(path, content=body, headers=headers)


def assert_malformed_body(response: Any) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "malformed-request"
    assert response.json()["field"] == "body"


# -- bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "\xff\xfe", "executor": "noop"}',
        b"\xff\xfe",
        b'{"name": "caf\xe9", "executor": "noop"}',  # Latin-1, not UTF-8
        b'{"name": "\xed\xa0\x80", "executor": "noop"}',  # an encoded surrogate
    ],
    ids=["in-a-string", "bare", "latin-1", "surrogate"],
)
async def test_a_body_that_is_not_utf8_is_a_400(api: Api, alice: Caller, body: bytes) -> None:
    assert_malformed_body(await post(api, alice, "/api/v1/tasks", body))


async def test_a_body_that_is_not_utf8_is_a_400_before_login_too(api: Api) -> None:
    assert_malformed_body(await post(api, None, "/api/v1/auth/login", b'{"username": "\xff"}'))


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 10_000, 30_000])
async def test_json_nested_beyond_the_limit_is_a_400(api: Api, alice: Caller, depth: int) -> None:
    tasks = await post(api, alice, "/api/v1/tasks", nested(depth).encode())
    login = await post(api, None, "/api/v1/auth/login", nested(depth).encode())
    inside = await post(
        api,
        alice,
        "/api/v1/tasks",
        b'{"name": "deep", "executor": "http", "params": {"url": "https://example.org",'
        + b' "json": '
        + nested(depth).encode()
        + b"}}",
    )

    for response in (tasks, login, inside):
        assert_malformed_body(response)


async def test_nesting_within_the_limit_is_accepted(api: Api, alice: Caller) -> None:
    # The task body's own two levels (object, params) plus the payload.
    payload = nested(MAX_JSON_DEPTH - 3)
    body = (
        '{"name": "deep-ok", "executor": "http",'
        f' "params": {{"url": "https://example.org", "json": {payload}}}}}'
    )

    response = await post(api, alice, "/api/v1/tasks", body.encode())

    assert response.status_code == 201, response.text


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '{"a": "' + "[" * 500 + '\\"' + "{" * 500 + '"}'

    assert not json_depth_exceeds(text.encode(), 64)
    assert json_depth_exceeds(('{"a": ' + nested(65) + "}").encode(), 64)
    assert not json_depth_exceeds(('{"a": ' + nested(63) + "}").encode(), 64)


# -- cursors --------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "abc.éé",
        "W1siYSJd." + "é" * 22,
        "\u200b",
        "garbage!!",
        b64(b"\x00\xffgarbage"),
        b64(b"\x00\xffgarbage") + "." + "A" * 22,
        b64(b'["x","y"]') + "." + "A" * 22,
        "." + "A" * 22,
        "a." + "A" * 21 + "=",
    ],
    ids=[
        "non-ascii-mac",
        "non-ascii-mac-of-the-right-length",
        "zero-width-space",
        "garbage",
        "base64-garbage",
        "base64-garbage-with-a-mac",
        "forged-position",
        "no-position",
        "padded-mac",
    ],
)
async def test_a_malformed_cursor_is_a_422_naming_it(api: Api, admin: Caller, cursor: str) -> None:
    task = await api.task(admin)
    paths = (*LISTS, f"/api/v1/tasks/{task['id']}/runs")
    for path in paths:
        response = await api.client.get(path, params={"cursor": cursor}, headers=admin.headers)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["field"] == "cursor", (path, response.text)


async def test_cursors_the_server_makes_match_the_documented_format(
    api: Api, alice: Caller
) -> None:
    for name in ("a", "b", "c"):
        await api.task(alice, name=name)
    page = await api.client.get("/api/v1/tasks?limit=1", headers=alice.headers)
    cursor = page.json()["next_cursor"]

    following = await api.client.get(
        "/api/v1/tasks", params={"limit": 1, "cursor": cursor}, headers=alice.headers
    )

    assert re.match(CURSOR_PATTERN, cursor)
    assert following.status_code == 200
    assert following.json()["items"][0]["name"] == "b"


# -- time bounds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0.5", "1700000000", "yesterday", "2030-13-01T00:00:00Z"])
async def test_a_time_bound_that_is_not_rfc3339_is_a_422_naming_it(
    api: Api, alice: Caller, value: str
) -> None:
    task = await api.task(alice)
    for path in ("/api/v1/runs", f"/api/v1/tasks/{task['id']}/runs"):
        response = await api.client.get(
            path, params={"created_before": value}, headers=alice.headers
        )
        assert response.status_code == 422, (path, response.text)
        assert response.json()["field"] == "created_before"


async def test_an_rfc3339_time_bound_filters(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    await api.run(alice, task["id"])

    before = await api.client.get(
        "/api/v1/runs", params={"created_before": "2000-01-01T00:00:00Z"}, headers=alice.headers
    )
    after = await api.client.get(
        "/api/v1/runs", params={"created_after": "2000-01-01t00:00:00+01:00"}, headers=alice.headers
    )

    assert (before.status_code, len(before.json()["items"])) == (200, 0)
    assert (after.status_code, len(after.json()["items"])) == (200, 1)


# -- the document ---------------------------------------------------------------------------------


@pytest.fixture
async def document(api: Api) -> dict[str, Any]:
    response = await api.client.get("/schema/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def request_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The JSON request body schema of each operation, references followed."""
    components = document["components"]["schemas"]
    found: dict[str, dict[str, Any]] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if not body:
                continue
            schema = body["content"]["application/json"]["schema"]
            options = schema.get("oneOf", [schema])
            for option in options:
                ref = option.get("$ref")
                if ref is not None:
                    option = components[ref.rsplit("/", 1)[1]]
                if option.get("type") == "object":
                    found[f"{method.upper()} {path}"] = option
    return found


async def test_every_request_body_is_a_closed_object(
    api: Api, alice: Caller, document: dict[str, Any]
) -> None:
    bodies = request_schemas(document)

    assert len(bodies) >= 15
    open_bodies = [op for op, schema in bodies.items() if schema.get("additionalProperties")]
    missing = [op for op, schema in bodies.items() if "additionalProperties" not in schema]
    assert open_bodies == []
    assert missing == []
    # ... and the server does refuse what the document refuses.
    extra = await api.client.post(
        "/api/v1/api-keys", json={"name": "k", "colour": "red"}, headers=alice.headers
    )
    assert extra.status_code == 422
    assert extra.json()["field"] == "colour"


async def test_the_document_states_the_cursor_format(document: dict[str, Any]) -> None:
    cursors = [
        parameter["schema"]
        for operations in document["paths"].values()
        for operation in operations.values()
        if isinstance(operation, dict)
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "cursor"
    ]

    assert len(cursors) == 8  # six lists, plus templates and their subscriptions
    assert all(schema.get("pattern") == CURSOR_PATTERN for schema in cursors)


async def test_the_document_states_the_password_and_username_rules(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    for name in ("UserCreateIn", "PasswordResetIn"):
        password = schemas[name]["properties"]["password"]
        assert (password["minLength"], password["maxLength"]) == (12, 1024), name
    assert schemas["UserCreateIn"]["properties"]["username"]["pattern"]


async def test_list_item_constraints_are_in_the_document(document: dict[str, Any]) -> None:
    queues = document["components"]["schemas"]["RegisterIn"]["properties"]["queues"]

    assert queues["items"]["minLength"] == 1
    assert queues["items"]["pattern"]


# -- strict bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/api-keys", {"name": 5}, "name"),
        ("/api/v1/api-keys", {"name": "k", "expires_at": 1700000000}, "expires_at"),
        ("/api/v1/worker/register", {"name": "w", "hostname": "h", "pid": "1", "queues": ["q"],
                                     "capacity": 1}, "pid"),
        ("/api/v1/worker/heartbeat", {"worker_id": "w", "runs": [{"run_id": "r", "token": "1"}]},
         "runs[0].token"),
        ("/api/v1/auth/login", {"username": "alice", "password": 123456789012}, "password"),
    ],
)  # fmt: skip
async def test_values_of_another_type_than_documented_are_refused(
    api: Api, admin: Caller, path: str, body: dict[str, Any], field: str
) -> None:
    response = await api.client.post(path, json=body, headers=admin.headers)

    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_a_user_update_takes_a_boolean_not_a_number(
    api: Api, admin: Caller, alice: Caller
) -> None:
    response = await api.client.patch(
        f"/api/v1/users/{alice.id}", json={"disabled": 1}, headers=admin.headers
    )
    me = await api.client.get("/api/v1/auth/me", headers=alice.headers)

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "disabled"
    assert me.status_code == 200


async def test_an_unknown_field_of_a_nested_object_is_named_with_its_path(
    api: Api, admin: Caller
) -> None:
    body = {"worker_id": "w", "runs": [{"run_id": "r", "token": 1, "extra": True}]}

    response = await api.client.post("/api/v1/worker/heartbeat", json=body, headers=admin.headers)

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "runs[0].extra"


# -- OPTIONS --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/v1/tasks", "GET, OPTIONS, POST"),
        ("/api/v1/api-keys", "GET, OPTIONS, POST"),
        ("/api/v1/tasks/01a2434e-0757-75cc-8098-f47bb6c25fa0", "DELETE, GET, OPTIONS, PATCH"),
        ("/api/v1/users/01a2434e-0757-75cc-8098-f47bb6c25fa0", "GET, OPTIONS, PATCH"),
        ("/api/v1/runs", "GET, OPTIONS"),
    ],
)
async def test_options_lists_every_method_of_the_resource(
    api: Api, alice: Caller, path: str, allow: str
) -> None:
    response = await api.client.options(path, headers=alice.headers)

    assert response.status_code == 204
    assert response.headers["allow"] == allow
