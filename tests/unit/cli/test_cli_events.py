"""``tasks watch`` and ``runs follow`` read the server's event stream (SSE): each change as it
happens, escaped for the terminal."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cli_harness import Cli, RemoteWorker
from test_cli_runs import _task, _trigger, meanwhile

from scheduler_cli.watch import event_line, task_event_line

pytestmark = pytest.mark.timeout(60)


def test_tasks_watch_prints_the_tasks_events_as_they_happen(
    admin: Cli, worker: RemoteWorker, http: httpx.Client
) -> None:
    task = _task(admin, "watched")
    run = _trigger(admin, "watched")

    def meanwhile_steps() -> None:
        worker.finish(status="succeeded")
        paused = http.post(f"/tasks/{task['id']}/pause")
        assert paused.status_code == 200, paused.text

    with meanwhile(meanwhile_steps, delay=0.5):
        result = admin("tasks", "watch", "watched", "--from-start", "--timeout", "3", "--json")

    assert result.exit_code == 0, result.stderr
    events: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "task.created"
    assert kinds[-1] == "task.paused"
    assert {"run.pending", "run.queued", "run.running", "run.succeeded"} <= set(kinds)
    assert {e["run_id"] for e in events if e["kind"].startswith("run.")} == {run["id"]}
    cursors = [e["cursor"] for e in events]
    assert len(set(cursors)) == len(cursors)


def test_tasks_watch_filters_by_kind_in_plain_lines(admin: Cli, http: httpx.Client) -> None:
    task = _task(admin, "quiet")
    # From the start: the pause is seen however late the stream opens on a loaded machine.
    with meanwhile(lambda: http.post(f"/tasks/{task['id']}/pause"), delay=0.5):
        result = admin(
            "tasks", "watch", "quiet", "--type", "task.paused", "--from-start", "--timeout", "3"
        )
    assert result.exit_code == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert "task.paused" in line
    assert "user:" in line


def test_follow_prints_changes_from_the_stream(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "streamed")
    run = _trigger(admin, "streamed")
    with meanwhile(lambda: worker.finish(status="succeeded", output="done\n")):
        result = admin("runs", "follow", run["id"], "--json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    changes = [line["event"]["to_status"] for line in lines if "event" in line]
    assert changes == ["pending", "queued", "running", "succeeded"]
    assert all("cursor" in line["event"] for line in lines if "event" in line)
    assert lines[-1]["run"]["status"] == "succeeded"
    assert ("GET", "/api/v1/events") in admin.transport.requests


def test_follow_of_a_run_that_ended_long_ago_prints_its_history(
    admin: Cli, worker: RemoteWorker
) -> None:
    _task(admin, "old")
    run = _trigger(admin, "old")
    worker.finish(status="succeeded")
    result = admin("runs", "follow", run["id"], "--json")
    assert result.exit_code == 0, result.stderr
    assert _json_lines(result.stdout)[-1]["run"]["status"] == "succeeded"


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_event_lines_escape_control_characters() -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07"
    task_line = task_event_line(
        {
            "at": "2030-01-01T00:00:00Z",
            "kind": "task.updated",
            "actor": hostile,
            "detail": {"changed": [hostile]},
        }
    )
    run_line = event_line(
        {
            "at": "2030-01-01T00:00:00Z",
            "run_id": hostile,
            "from_status": "running",
            "to_status": "failed",
            "actor": hostile,
        }
    )
    for line in (task_line, run_line):
        assert "\x1b" not in line
        assert "\x07" not in line
        assert "\\x1b" in line
