"""Every error becomes one RFC 9457 problem document; nothing leaks a stack trace."""

from __future__ import annotations

import logging

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from scheduler_api.errors import handle_exception
from scheduler_api.schemas.problems import PROBLEM_BASE
from scheduler_api.throttle import Throttled
from scheduler_application.errors import (
    AlreadyExists,
    AuthenticationFailed,
    Conflict,
    Contended,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from scheduler_domain.errors import IllegalTransition, StaleFencingToken, ValidationError

CASES = [
    (ValidationError("bad name", field="name"), 422, "validation-error", "name"),
    (NotFound("no such task", field="task_id"), 404, "not-found", "task_id"),
    (AlreadyExists("taken", field="name"), 409, "already-exists", "name"),
    (Conflict("moved on", field="version"), 409, "conflict", "version"),
    (Contended("the run was changed concurrently, try again"), 409, "conflict", None),
    (PermissionDenied("no"), 403, "permission-denied", None),
    (AuthenticationFailed("who?"), 401, "authentication-failed", None),
    (Unavailable("db down: password=hunter2"), 503, "unavailable", None),
    (IllegalTransition("succeeded", "running"), 409, "illegal-transition", "status"),
    (StaleFencingToken(expected=3, got=2), 409, "stale-fencing-token", "token"),
    (Throttled(42, scope="account"), 429, "too-many-requests", "username"),
    (RuntimeError("secret internals /etc/passwd"), 500, "internal-error", None),
]


def client_raising(error: Exception) -> TestClient[Litestar]:
    @get("/boom")
    async def boom() -> None:
        raise error

    app = Litestar([boom], exception_handlers={Exception: handle_exception}, logging_config=None)
    return TestClient(app)


@pytest.mark.parametrize(("error", "status", "code", "field"), CASES)
def test_errors_map_to_problems(
    error: Exception, status: int, code: str, field: str | None
) -> None:
    with client_raising(error) as client:
        response = client.get("/boom")

    body = response.json()
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert body["type"] == PROBLEM_BASE + code
    assert body["status"] == status
    assert body["code"] == code
    assert body.get("field") == field
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text


def test_unexpected_errors_are_logged_and_answered_generically(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR), client_raising(KeyError("internal")) as client:
        response = client.get("/boom")

    assert response.status_code == 500
    assert "KeyError" not in response.text
    assert response.json()["instance"].startswith("urn:uuid:")
    incident = response.json()["instance"].removeprefix("urn:uuid:")
    assert any(incident in record.getMessage() for record in caplog.records)


def test_unavailable_hides_the_driver_message() -> None:
    with client_raising(Unavailable("password=hunter2")) as client:
        response = client.get("/boom")

    assert "hunter2" not in response.text
    assert response.headers["retry-after"] == "5"


def test_throttled_says_when_to_retry() -> None:
    with client_raising(Throttled(17, scope="address")) as client:
        response = client.get("/boom")

    assert response.headers["retry-after"] == "17"


def test_a_lost_race_says_the_same_request_may_be_retried_a_conflict_does_not() -> None:
    with client_raising(Contended("changed concurrently: deadlock detected")) as client:
        response = client.get("/boom")
    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    with client_raising(Conflict("the run moved on")) as client:
        response = client.get("/boom")
    assert response.status_code == 409
    assert "retry-after" not in response.headers
