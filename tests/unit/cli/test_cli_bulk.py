"""``scheduler runs bulk`` and ``scheduler tasks bulk`` against the real API."""

from __future__ import annotations

import json

import pytest
from cli_harness import Cli

pytestmark = pytest.mark.timeout(60)


def _ok(result) -> object:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_cancel_runs_by_filter_counts_first_then_reports(admin: Cli) -> None:
    _ok(admin("tasks", "create", "--name", "many", "--executor", "noop", "--json"))
    for _ in range(3):
        _ok(admin("tasks", "trigger", "many", "--json"))

    dry = _ok(admin("runs", "bulk", "cancel", "--task", "many", "--dry-run", "--json"))
    assert dry == {"action": "runs.cancel", "matched": 3}

    refused = admin("runs", "bulk", "cancel", "--task", "many")
    assert refused.exit_code != 0
    assert "needs --yes" in refused.stderr

    done = _ok(admin("runs", "bulk", "cancel", "--task", "many", "--yes", "--json"))
    assert (done["status"], done["succeeded"], done["total"]) == ("succeeded", 3, 3)
    runs = _ok(admin("runs", "list", "--task", "many", "--json"))
    assert {r["status"] for r in runs} == {"cancelled"}

    again = admin("runs", "bulk", "retry", "--task", "many", "--status", "cancelled", "--yes")
    assert again.exit_code == 0, again.stderr
    assert "runs.retry: 3 done, 0 skipped, 0 failed of 3 runs" in again.stdout


def test_pause_tasks_by_prefix_and_bad_actions(admin: Cli) -> None:
    for name in ("etl-a", "etl-b", "web"):
        _ok(admin("tasks", "create", "--name", name, "--executor", "noop", "--json"))
    done = _ok(admin("tasks", "bulk", "pause", "--prefix", "etl-", "--yes", "--json"))
    assert done["succeeded"] == 2
    paused = _ok(admin("tasks", "list", "--disabled", "--json"))
    assert sorted(t["name"] for t in paused) == ["etl-a", "etl-b"]
    wrong = admin("tasks", "bulk", "explode", "--yes")
    assert wrong.exit_code != 0
    assert "pause, resume, delete" in wrong.stderr


def test_batch_triggers_many_runs_in_one_request(admin: Cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _ok(admin("tasks", "create", "--name", "batched", "--executor", "noop", "--json"))
    done = admin("runs", "batch", "--task", "batched", "--count", "5", "--key-prefix", "b1")
    assert done.exit_code == 0, done.stderr
    assert "5 created, 0 replayed, 0 refused" in done.stdout
    again = _ok(
        admin("runs", "batch", "--task", "batched", "--count", "5", "--key-prefix", "b1", "--json")
    )
    assert (again["created"], again["replayed"]) == (0, 5)
    source = tmp_path / "triggers.yaml"
    source.write_text("- {task_id: no-such-task}\n- {task_id: no-such-task, priority: 3}\n")
    refused = admin("runs", "batch", "-f", str(source))
    assert refused.exit_code == 0, refused.stderr
    assert "0 created, 0 replayed, 2 refused" in refused.stdout
    assert "#1: task_id" in refused.stdout
