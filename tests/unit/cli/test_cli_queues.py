"""``scheduler queues …`` against the real API: list, show, pause, resume, purge, set."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cli_harness import PASSWORD, ApiInThread, Cli

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _task_with_runs(admin: Cli, queue: str, runs: int) -> str:
    task = _json(
        admin("tasks", "create", "--name", f"on-{queue}", "--executor", "noop",
              "--queue", queue, "--json")
    )  # fmt: skip
    for _ in range(runs):
        _json(admin("tasks", "trigger", task["id"], "--json"))
    return str(task["id"])


def test_pause_resume_and_list(admin: Cli) -> None:
    _task_with_runs(admin, "reports", 1)

    paused = _json(admin("queues", "pause", "reports", "--json"))
    table = admin("queues")
    resumed = _json(admin("queues", "resume", "reports", "--json"))
    listed = _json(admin("queues", "--json"))

    assert paused["paused"] is True
    assert paused["pending"] == 1
    assert paused["queued"] == 0
    assert table.exit_code == 0, table.stderr
    assert "reports" in table.stdout
    assert "paused" in table.stdout
    assert resumed["paused"] is False
    assert {q["name"]: q["paused"] for q in listed["items"]}["reports"] is False


def test_set_and_clear_limits(admin: Cli) -> None:
    set_ = _json(
        admin("queues", "set", "bulk", "--rate-limit", "10/s", "--max-concurrency", "5", "--json")
    )
    text = admin("queues", "show", "bulk")
    cleared = _json(admin("queues", "set", "bulk", "--clear-rate-limit", "--json"))
    nothing = admin("queues", "set", "bulk")
    bad = admin("queues", "set", "bulk", "--rate-limit", "lots")

    assert (set_["rate_limit"], set_["max_concurrency"]) == ("10/s", 5)
    assert "rate 10/s, max 5" in text.stdout, text.stdout
    assert (cleared["rate_limit"], cleared["max_concurrency"]) == (None, 5)
    assert nothing.exit_code != 0
    assert "nothing to set" in nothing.stderr
    assert bad.exit_code != 0
    assert "rate_limit" in bad.stderr, bad.stderr


def test_purge_asks_first_or_takes_yes(admin: Cli) -> None:
    _task_with_runs(admin, "junk", 2)

    refused = admin("queues", "purge", "junk")  # stdin is no terminal: --yes is required
    purged = _json(admin("queues", "purge", "junk", "--yes", "--json"))

    assert refused.exit_code != 0
    assert "--yes" in refused.stderr
    assert purged == {"queue": "junk", "cancelled": 2}


def test_a_viewer_is_refused(api: ApiInThread, cli: Cli) -> None:
    api.user("vera", Role.VIEWER)
    cli.login("vera", PASSWORD)

    result = cli("queues", "pause", "default")

    assert result.exit_code != 0
    assert "cannot change queues" in result.stderr, result.stderr


def test_a_named_limit_must_exist_and_is_not_deleted_while_named(admin: Cli) -> None:
    missing = admin("queues", "set", "bulk", "--limit", "vendor-ap")
    task = admin("tasks", "create", "--name", "t", "--executor", "noop", "--limit", "vendor-ap")
    _json(admin("limits", "set", "vendor-api", "--rate", "10/s", "--json"))
    _json(admin("queues", "set", "bulk", "--limit", "vendor-api", "--json"))
    bound = _json(admin("tasks", "create", "--name", "t", "--executor", "noop",
                        "--limit", "vendor-api", "--json"))  # fmt: skip
    refused = admin("limits", "delete", "vendor-api")

    assert bound["limits"] == ["vendor-api"]
    assert missing.exit_code != 0
    assert "no limit named 'vendor-ap'" in missing.stderr, missing.stderr
    assert task.exit_code != 0
    assert "limits[0]" in task.stderr, task.stderr
    assert refused.exit_code != 0
    assert "queue(s): bulk" in refused.stderr, refused.stderr
    assert "1 task(s): t" in refused.stderr, refused.stderr
