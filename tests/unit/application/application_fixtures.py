"""Principals, instants and task specs shared by the application unit tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scheduler_application.accounts.access import Principal
from scheduler_domain.accounts import Role

START = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)

ALICE = Principal("alice", Role.USER)
BOB = Principal("bob", Role.USER)
VIEWER_ALICE = Principal("alice", Role.VIEWER)
OPERATOR = Principal("olga", Role.OPERATOR)
WORKER_ROLE = Principal("w-1", Role.WORKER, via="api_key")


def task_spec(name: str = "nightly-report", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "executor": "shell",
        "params": {"argv": ["echo", "hi"]},
    }
    spec.update(overrides)
    return spec
