"""``scheduler runs …`` and ``tasks trigger --wait``: runs are moved along by a worker speaking
the worker protocol from another thread while the CLI waits."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from cli_harness import Cli, RemoteWorker

pytestmark = pytest.mark.timeout(60)


def _json(result) -> Any:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@contextmanager
def meanwhile(action: Callable[[], object], delay: float = 0.3) -> Iterator[None]:
    """Run ``action`` in another thread after ``delay`` while the block waits; re-raise what it
    raised. The action must not invoke the CLI: CliRunner is not thread-safe."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:  # surfaced in the test's thread below
            failures.append(error)

    timer = threading.Timer(delay, run)
    timer.start()
    try:
        yield
    finally:
        timer.join(30)
    if failures:
        raise failures[0]


def _task(admin: Cli, name: str, *extra: str) -> dict[str, Any]:
    return _json(admin("tasks", "create", "--name", name, "--argv", "echo hi", *extra, "--json"))


def _trigger(admin: Cli, name: str) -> dict[str, Any]:
    return _json(admin("tasks", "trigger", name, "--json"))


def test_trigger_wait_exits_0_when_the_run_succeeds(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "good")

    with meanwhile(lambda: worker.finish(status="succeeded", output="hi\n")):
        result = admin("tasks", "trigger", "good", "--wait", "--interval", "0.05")

    assert result.exit_code == 0, result.stderr
    assert "succeeded" in result.stdout
    assert "(exit code 0)" in result.stdout


def test_wait_exits_1_when_the_run_fails(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "bad")
    run = _trigger(admin, "bad")

    with meanwhile(lambda: worker.finish(status="failed", exit_code=3)):
        result = admin("runs", "wait", run["id"], "--interval", "0.05", "--json")

    assert result.exit_code == 1
    final = json.loads(result.stdout)
    assert final["id"] == run["id"]
    assert final["status"] == "dead_lettered"


def test_wait_exits_2_when_the_run_is_cancelled(admin: Cli, http: httpx.Client) -> None:
    _task(admin, "dropped")
    run = _trigger(admin, "dropped")

    def cancel() -> None:
        http.post(f"/runs/{run['id']}/cancel", json={"reason": "not today"}).raise_for_status()

    with meanwhile(cancel):
        result = admin("runs", "wait", run["id"], "--interval", "0.05")

    assert result.exit_code == 2
    assert "cancelled" in result.stdout
    assert "not today" in result.stdout


def test_wait_gives_up_after_its_timeout_with_124(admin: Cli) -> None:
    _task(admin, "stuck")
    run = _trigger(admin, "stuck")

    result = admin("runs", "wait", run["id"], "--timeout", "0.3", "--interval", "0.05")

    assert result.exit_code == 124
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: run {run['id']} is still queued after 0.3s (--timeout)"
    )


def test_wait_shows_progress_as_plain_lines_when_not_on_a_terminal(
    admin: Cli, worker: RemoteWorker
) -> None:
    _task(admin, "watched")
    run = _trigger(admin, "watched")

    with meanwhile(lambda: worker.finish(status="succeeded")):
        result = admin("runs", "wait", run["id"], "--interval", "0.05", "--json")

    assert result.exit_code == 0
    assert f"run {run['id']}: queued" in result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"  # stdout: only the JSON


def test_wait_follows_an_automatic_retry_to_the_final_outcome(
    admin: Cli, worker: RemoteWorker
) -> None:
    admin(
        "tasks",
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "name": "flaky",
                "executor": "noop",
                "retry": {"max_attempts": 2, "base_delay_seconds": 0},
            }
        ),
    )
    run = _trigger(admin, "flaky")

    def fail_then_succeed() -> None:
        worker.finish(status="failed", exit_code=1)
        worker.finish(status="succeeded")

    with meanwhile(fail_then_succeed):
        result = admin("runs", "wait", run["id"], "--interval", "0.05", "--json")

    assert result.exit_code == 0, result.stderr
    final = json.loads(result.stdout)
    assert final["retry_of"] == run["id"]
    assert final["attempt"] == 2


def test_wait_can_stop_at_the_first_attempt(admin: Cli, worker: RemoteWorker) -> None:
    admin(
        "tasks",
        "create",
        "-f",
        "-",
        input=json.dumps({"name": "flaky", "executor": "noop", "retry": {"max_attempts": 2}}),
    )
    run = _trigger(admin, "flaky")

    with meanwhile(lambda: worker.finish(status="failed")):
        result = admin(
            "runs", "wait", run["id"], "--no-follow-retries", "--interval", "0.05", "--json"
        )

    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"


def test_follow_prints_each_change_and_then_the_output(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "chatty")
    run = _trigger(admin, "chatty")

    with meanwhile(lambda: worker.finish(status="succeeded", output="line one\nline two\n")):
        result = admin("runs", "follow", run["id"], "--interval", "0.05")

    assert result.exit_code == 0, result.stderr
    assert "pending → queued" in result.stdout
    assert "running → succeeded" in result.stdout
    assert "| line one" in result.stdout
    assert "| line two" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith(f"run {run['id']}: succeeded")


def test_follow_json_is_one_object_per_line(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "chatty")
    run = _trigger(admin, "chatty")

    with meanwhile(lambda: worker.finish(status="failed", output="boom\n")):
        result = admin("runs", "follow", run["id"], "--interval", "0.05", "--json")

    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"event"} <= set(lines[0])
    assert any(line.get("output") == "boom\n" for line in lines)
    assert lines[-1]["run"]["status"] == "dead_lettered"


def test_output_prints_what_the_worker_captured(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "echo")
    run = _trigger(admin, "echo")
    worker.finish(status="succeeded", output="hello\n")

    result = admin("runs", "output", run["id"])

    assert result.exit_code == 0
    assert result.stdout == "hello\n"


def test_events_list_the_audit_trail(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "audited")
    run = _trigger(admin, "audited")
    worker.finish(status="succeeded")

    events = _json(admin("runs", "events", run["id"], "--json"))
    table = admin("runs", "events", run["id"])

    assert [e["to_status"] for e in events] == ["pending", "queued", "running", "succeeded"]
    assert "ACTOR" in table.stdout


def test_retry_starts_a_new_attempt(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "again")
    run = _trigger(admin, "again")
    worker.finish(status="failed")

    retried = _json(admin("runs", "retry", run["id"], "--json"))

    assert retried["retry_of"] == run["id"]
    assert retried["attempt"] == run["attempt"] + 1
    assert retried["status"] == "queued"  # dispatched in the transaction that created it


def test_list_filters_by_task_name_and_status(admin: Cli, worker: RemoteWorker) -> None:
    _task(admin, "one")
    _task(admin, "two")
    first = _trigger(admin, "one")
    worker.finish(status="succeeded")
    _trigger(admin, "two")

    by_task = _json(admin("runs", "list", "--task", "one", "--json"))
    by_status = _json(admin("runs", "list", "--status", "succeeded", "--json"))
    table = admin("runs", "list")

    assert [r["id"] for r in by_task] == [first["id"]]
    assert [r["id"] for r in by_status] == [first["id"]]
    assert "one" in table.stdout
    assert "two" in table.stdout


def test_list_filters_by_queue(admin: Cli) -> None:
    _task(admin, "plain")
    _task(admin, "reports", "--queue", "reports")
    _trigger(admin, "plain")
    in_reports = _trigger(admin, "reports")

    by_queue = _json(admin("runs", "list", "--queue", "reports", "--json"))
    refused = admin("runs", "list", "--queue", "a b")

    assert [r["id"] for r in by_queue] == [in_reports["id"]]
    assert refused.exit_code != 0
    assert "queue" in refused.stderr


def test_get_of_an_unknown_run_is_a_one_line_error(admin: Cli) -> None:
    result = admin("runs", "get", "01a201fc-1836-71a5-82b0-93c30d0a20e9")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "not found" in result.stderr


def test_trigger_may_name_the_logical_time(admin: Cli) -> None:
    _task(admin, "backfill")

    run = _json(
        admin(
            "tasks", "trigger", "backfill", "--logical-time", "2026-01-01T03:00:00+01:00", "--json"
        )
    )
    refused = admin("tasks", "trigger", "backfill", "--logical-time", "2026-01-01T03:00:00")

    assert run["scheduled_for"] == "2026-01-01T02:00:00Z"
    assert refused.exit_code != 0
    assert "logical_time" in refused.stderr
