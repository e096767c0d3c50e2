"""A worker's name means the live worker; undrain, against the real API."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from cli_harness import Cli

pytestmark = pytest.mark.timeout(60)


def _json(result) -> Any:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def _register(http: httpx.Client, name: str) -> str:
    answer = http.post(
        "/worker/register",
        json={
            "name": name,
            "hostname": "here",
            "pid": os.getpid(),
            "queues": ["default"],
            "capacity": 1,
        },
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _deregister(http: httpx.Client, worker_id: str) -> None:
    answer = http.post("/worker/deregister", json={"worker_id": worker_id})
    assert answer.status_code in (200, 204), answer.text


def test_a_name_means_the_live_worker_after_a_restart(admin: Cli, http: httpx.Client) -> None:
    old = _register(http, "w2")
    _deregister(http, old)  # the process stopped; its record stays, offline
    new = _register(http, "w2")  # ... and started again under a new id

    drained = _json(admin("workers", "drain", "w2", "--json"))
    assert (drained["id"], drained["status"]) == (new, "draining")

    undrained = _json(admin("workers", "undrain", "w2", "--json"))
    assert (undrained["id"], undrained["status"]) == (new, "online")
    assert "is online" in admin("workers", "undrain", "w2").stdout


def test_two_live_workers_of_one_name_are_ambiguous_and_named(
    admin: Cli, http: httpx.Client
) -> None:
    first, second = _register(http, "twin"), _register(http, "twin")

    result = admin("workers", "drain", "twin")

    assert result.exit_code != 0
    assert "2 live workers are named 'twin'" in result.stderr
    assert first in result.stderr
    assert second in result.stderr


def test_undrain_of_an_offline_worker_says_why(admin: Cli, http: httpx.Client) -> None:
    gone = _register(http, "gone")
    _deregister(http, gone)

    result = admin("workers", "undrain", gone)

    assert result.exit_code != 0
    assert "offline" in result.stderr
    assert "only a live worker can be undrained" in result.stderr
