"""``scheduler tasks …`` against the real API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_harness import Cli

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)


def _json(result) -> object:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_create_from_flags_builds_a_shell_task_with_a_cron_schedule(admin: Cli) -> None:
    task = _json(
        admin(
            "tasks",
            "create",
            "--name",
            "hello",
            "--argv",
            "echo 'hello world'",
            "--cron",
            "*/5 * * * *",
            "--timezone",
            "Europe/Berlin",
            "--json",
        )
    )

    assert task["executor"] == "shell"
    assert task["params"] == {"argv": ["echo", "hello world"]}
    assert task["schedule"]["cron"] == "*/5 * * * *"
    assert task["schedule"]["timezone"] == "Europe/Berlin"
    assert task["next_run_at"] is not None


def test_create_from_a_file_with_flags_laid_over_it(admin: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "task.json"
    spec.write_text(
        json.dumps(
            {
                "name": "from-file",
                "executor": "noop",
                "queue": "reports",
                "retry": {"max_attempts": 3},
            }
        )
    )

    task = _json(admin("tasks", "create", "--file", str(spec), "--queue", "default", "--json"))

    assert task["name"] == "from-file"
    assert task["queue"] == "default"
    assert task["retry"]["max_attempts"] == 3


def test_create_reads_the_task_from_stdin(admin: Cli) -> None:
    body = json.dumps({"name": "piped", "executor": "noop", "schedule": {"interval_seconds": 60}})

    task = _json(admin("tasks", "create", "-f", "-", "--json", input=body))

    assert task["schedule"] == {"interval_seconds": 60}


def test_create_says_which_field_is_invalid(admin: Cli) -> None:
    result = admin("tasks", "create", "--name", "bad", "--argv", "true", "--max-attempts", "0")

    line = _error(result)
    assert "retry.max_attempts" in line
    assert "between 1 and 1000" in line


def test_create_refuses_a_file_that_is_not_json(admin: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "task.json"
    spec.write_text("name: yaml")

    assert "is not valid JSON" in _error(admin("tasks", "create", "--file", str(spec)))


def test_create_without_a_name_is_refused_before_asking_the_server(admin: Cli) -> None:
    assert "needs a name" in _error(admin("tasks", "create", "--executor", "noop"))


def test_list_shows_a_table_for_people_and_json_for_scripts(admin: Cli) -> None:
    admin("tasks", "create", "--name", "alpha", "--executor", "noop")
    admin("tasks", "create", "--name", "beta", "--executor", "noop", "--every", "30")

    table = admin("tasks", "list")
    listed = _json(admin("tasks", "list", "--json"))

    assert table.exit_code == 0
    assert "NAME" in table.stdout
    assert "alpha" in table.stdout
    assert "every 30s" in table.stdout
    assert sorted(t["name"] for t in listed) == ["alpha", "beta"]


def test_list_says_when_there_are_more(admin: Cli) -> None:
    for name in ("a1", "a2", "a3"):
        admin("tasks", "create", "--name", name, "--executor", "noop")

    result = admin("tasks", "list", "--limit", "2", "--json")

    assert len(_json(result)) == 2
    assert "--all" in result.stderr
    assert len(_json(admin("tasks", "list", "--limit", "2", "--all", "--json"))) == 3


def test_a_task_is_found_by_name_or_by_id(admin: Cli) -> None:
    created = _json(admin("tasks", "create", "--name", "report", "--executor", "noop", "--json"))

    by_name = _json(admin("tasks", "get", "report", "--json"))
    by_id = _json(admin("tasks", "get", created["id"], "--json"))
    shown = admin("tasks", "get", "report")

    assert by_name["id"] == by_id["id"] == created["id"]
    assert created["id"] in shown.stdout


def test_an_unknown_task_is_a_one_line_error(admin: Cli) -> None:
    by_name = admin("tasks", "get", "no-such-task")
    by_id = admin("tasks", "trigger", "01a201fc-1836-71a5-82b0-93c30d0a20e9")

    assert _error(by_name) == "error: no task named 'no-such-task'"
    assert "not found" in _error(by_id)
    assert by_name.stdout == by_id.stdout == ""


def test_a_name_shared_by_two_owners_means_the_callers_own_task(admin: Cli) -> None:
    admin.api.user("alice", Role.USER)
    mine = _json(admin("tasks", "create", "--name", "shared", "--executor", "noop", "--json"))
    admin("logout")
    admin.login("alice")
    _json(admin("tasks", "create", "--name", "shared", "--executor", "noop", "--json"))
    admin("logout")
    admin.login()

    assert _json(admin("tasks", "get", "shared", "--json"))["id"] == mine["id"]


def test_update_changes_single_fields_and_keeps_the_rest(admin: Cli) -> None:
    admin(
        "tasks",
        "create",
        "--name",
        "nightly",
        "--argv",
        "echo hi",
        "--param",
        "cwd=/tmp",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Berlin",
    )

    updated = _json(
        admin(
            "tasks", "update", "nightly", "--cron", "30 6 * * 1-5", "--argv", "echo bye", "--json"
        )
    )

    assert updated["schedule"]["cron"] == "30 6 * * 1-5"
    assert updated["schedule"]["timezone"] == "Europe/Berlin"
    assert updated["params"] == {"argv": ["echo", "bye"], "cwd": "/tmp"}
    assert updated["version"] == 2


def test_update_moves_a_cron_schedule_to_another_zone(admin: Cli) -> None:
    admin("tasks", "create", "--name", "zoned", "--executor", "noop", "--cron", "0 2 * * *")

    updated = _json(admin("tasks", "update", "zoned", "--timezone", "Asia/Tokyo", "--json"))

    assert updated["schedule"]["cron"] == "0 2 * * *"
    assert updated["schedule"]["timezone"] == "Asia/Tokyo"


def test_update_with_a_stale_version_is_refused(admin: Cli) -> None:
    admin("tasks", "create", "--name", "versioned", "--executor", "noop")
    admin("tasks", "pause", "versioned")

    result = admin("tasks", "update", "versioned", "--priority", "8", "--if-version", "1")

    assert "version" in _error(result)


def test_update_with_nothing_to_change_is_refused(admin: Cli) -> None:
    admin("tasks", "create", "--name", "still", "--executor", "noop")

    assert "nothing to change" in _error(admin("tasks", "update", "still"))


def test_pause_and_resume(admin: Cli) -> None:
    admin("tasks", "create", "--name", "ticker", "--executor", "noop", "--every", "60")

    paused = _json(admin("tasks", "pause", "ticker", "--json"))
    resumed = admin("tasks", "resume", "ticker")

    assert paused["paused"] is True
    assert resumed.exit_code == 0
    assert "ticker is active" in resumed.stdout


def test_delete_asks_for_yes_when_it_cannot_prompt(admin: Cli) -> None:
    admin("tasks", "create", "--name", "doomed", "--executor", "noop")

    refused = admin("tasks", "delete", "doomed")
    deleted = admin("tasks", "delete", "doomed", "--yes")

    assert "--yes" in _error(refused)
    assert deleted.exit_code == 0, deleted.stderr
    assert "no task named" in _error(admin("tasks", "get", "doomed"))


def test_trigger_with_an_idempotency_key_gives_the_same_run_twice(admin: Cli) -> None:
    admin("tasks", "create", "--name", "once", "--executor", "noop")

    first = _json(admin("tasks", "trigger", "once", "--idempotency-key", "k-1", "--json"))
    again = admin("tasks", "trigger", "once", "--idempotency-key", "k-1")

    assert first["trigger"] == "manual"
    assert first["idempotency_key"] == "k-1"
    assert again.exit_code == 0
    assert f"run {first['id']} was already triggered" in again.stdout
    assert len(_json(admin("runs", "list", "--task", "once", "--json"))) == 1


def test_schedule_shows_the_next_fire_times_in_the_tasks_zone(admin: Cli) -> None:
    admin(
        "tasks",
        "create",
        "--name",
        "berlin",
        "--executor",
        "noop",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Berlin",
    )

    preview = _json(admin("tasks", "schedule", "berlin", "--next", "3", "--json"))
    shown = admin("tasks", "schedule", "berlin")

    assert preview["timezone"] == "Europe/Berlin"
    assert len(preview["next_fire_times"]) == 3
    assert "next fire times in Europe/Berlin" in shown.stdout


def test_depends_on_takes_task_names(admin: Cli) -> None:
    upstream = _json(admin("tasks", "create", "--name", "extract", "--executor", "noop", "--json"))

    task = _json(
        admin(
            "tasks",
            "create",
            "--name",
            "load",
            "--executor",
            "noop",
            "--depends-on",
            "extract",
            "--json",
        )
    )

    assert task["depends_on"] == [upstream["id"]]


@pytest.mark.parametrize(
    "command",
    [
        ["tasks", "--help"],
        ["tasks", "create", "--help"],
        ["tasks", "trigger", "--help"],
        ["runs", "wait", "--help"],
        ["runs", "follow", "--help"],
        ["workers", "drain", "--help"],
        ["queues", "--help"],
        ["users", "create", "--help"],
        ["api-keys", "issue", "--help"],
        ["status", "--help"],
        ["login", "--help"],
    ],
)
def test_every_command_has_help(cli: Cli, command: list[str]) -> None:
    result = cli(*command)

    assert result.exit_code == 0
    assert "Usage:" in result.stdout


# -- secret_env -----------------------------------------------------------------------------------


def test_secret_env_values_come_from_files_stdin_or_flags_and_are_never_shown(
    admin: Cli, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-9d2\n")
    created = _json(
        admin(
            "tasks",
            "create",
            "--name",
            "with-secrets",
            "--argv",
            "env",
            "--secret-env",
            f"TOKEN=@{token_file}",
            "--secret-env",
            "PIPED=@-",
            "--secret-env",
            "AT_SIGN=@@literal",
            "--json",
            input="from-stdin-71c\n",
        )
    )
    assert created["secret_env_names"] == ["AT_SIGN", "PIPED", "TOKEN"]
    assert admin.api.secret_env(created["id"]) == {
        "TOKEN": "from-a-file-9d2",
        "PIPED": "from-stdin-71c",
        "AT_SIGN": "@literal",
    }
    shown = admin("tasks", "get", "with-secrets")
    assert shown.exit_code == 0, shown.stderr
    assert "TOKEN" in shown.stdout
    assert "from-a-file-9d2" not in shown.stdout + shown.stderr


def test_update_sets_and_unsets_secret_env_keeping_the_others(admin: Cli, tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.write_text("first-value-1")
    created = _json(
        admin(
            "tasks",
            "create",
            "--name",
            "s",
            "--argv",
            "env",
            "--secret-env",
            f"KEEP=@{first}",
            "--secret-env",
            f"DROP=@{first}",
            "--json",
        )
    )
    updated = _json(
        admin(
            "tasks",
            "update",
            "s",
            "--secret-env",
            "NEW=plain-value-2",
            "--unset-secret-env",
            "DROP",
            "--json",
        )
    )
    assert updated["secret_env_names"] == ["KEEP", "NEW"]
    assert admin.api.secret_env(created["id"]) == {
        "KEEP": "first-value-1",
        "NEW": "plain-value-2",
    }


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--secret-env", "TOKEN=@/nonexistent/file"], "/nonexistent/file"),
        (["--secret-env", "=x"], "--secret-env"),
        (["--secret-env", "TOKEN"], "TOKEN=@file"),  # no terminal to ask on
        (["--secret-env", "A=@-", "--secret-env", "B=@-"], "stdin"),
    ],
)
def test_bad_secret_env_flags_are_one_line_errors(admin: Cli, args: list[str], needle: str) -> None:
    line = _error(admin("tasks", "create", "--name", "x", "--argv", "env", *args, input=""))
    assert needle in line


def test_a_secret_env_name_the_server_refuses_is_reported_with_the_field(admin: Cli) -> None:
    line = _error(admin("tasks", "create", "--name", "x", "--argv", "env", "--secret-env", "A-B=v"))
    assert "secret_env" in line


def test_create_sets_every_task_field_the_api_has(admin: Cli) -> None:
    task = _json(
        admin(
            "tasks",
            "create",
            "--name",
            "every-field",
            "--executor",
            "noop",
            "--cron",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--dst-gap",
            "skip",
            "--dst-fold",
            "both",
            "--label",
            "gpu",
            "--strategy",
            "least_loaded",
            "--concurrency",
            "forbid",
            "--max-concurrent",
            "2",
            "--misfire",
            "catch_up",
            "--catch-up-cap",
            "4",
            "--misfire-grace",
            "30",
            "--spread",
            "15",
            "--rate-limit",
            "5/10s",
            "--trigger-rule",
            "all_done",
            "--max-attempts",
            "3",
            "--retry-base-delay",
            "2",
            "--retry-max-delay",
            "60",
            "--retry-jitter",
            "1",
            "--json",
        )
    )

    assert task["schedule"] == {
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "dst_gap": "skip",
        "dst_fold": "both",
    }
    assert task["labels"] == ["gpu"]
    assert task["strategy"] == "least_loaded"
    assert task["concurrency"] == "forbid"
    assert task["max_concurrent"] == 2
    assert task["misfire"] == {"policy": "catch_up", "catch_up_cap": 4, "grace_seconds": 30}
    assert task["spread_seconds"] == 15
    assert task["rate_limit"] == "5/10s"
    assert task["trigger_rule"] == "all_done"
    assert task["retry"] == {
        "max_attempts": 3,
        "base_delay_seconds": 2,
        "max_delay_seconds": 60,
        "jitter_seconds": 1,
    }


def test_update_changes_dst_policies_and_clears_limits(admin: Cli) -> None:
    admin(
        "tasks",
        "create",
        "--name",
        "limited",
        "--executor",
        "noop",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--rate-limit",
        "1/m",
        "--max-concurrent",
        "1",
        "--retry-base-delay",
        "5",
    )

    task = _json(
        admin(
            "tasks",
            "update",
            "limited",
            "--dst-fold",
            "last",
            "--rate-limit",
            "none",
            "--max-concurrent",
            "none",
            "--retry-jitter",
            "3",
            "--json",
        )
    )

    assert task["schedule"]["cron"] == "30 2 * * *"
    assert task["schedule"]["timezone"] == "Europe/Berlin"
    assert task["schedule"]["dst_fold"] == "last"
    assert task["rate_limit"] is None
    assert task["max_concurrent"] is None
    assert task["retry"]["base_delay_seconds"] == 5  # merged, not replaced
    assert task["retry"]["jitter_seconds"] == 3


def test_a_dst_flag_without_a_cron_schedule_is_refused(admin: Cli) -> None:
    line = _error(
        admin("tasks", "create", "--name", "x", "--executor", "noop", "--dst-gap", "skip")
    )
    assert "--dst-gap applies to a cron schedule" in line


def test_json_errors_are_one_json_object_on_stderr(admin: Cli) -> None:
    result = admin(
        "tasks",
        "create",
        "--name",
        "bad",
        "--executor",
        "noop",
        "--max-attempts",
        "0",
        "--json",
    )

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    problem = json.loads(lines[0])
    assert problem["status"] == 422
    assert problem["field"] == "retry.max_attempts"
    assert problem["code"]
    assert "max_attempts" in problem["detail"]
    assert not problem["detail"].startswith("retry.max_attempts:")


def test_json_errors_before_any_request_are_json_too(admin: Cli) -> None:
    result = admin("tasks", "get", "no-such-task", "--json")

    assert result.exit_code == 1
    problem = json.loads(result.stderr)
    assert problem["status"] == 404
    assert problem["code"] == "not-found"
    assert "no-such-task" in problem["detail"]

    bad = admin("tasks", "create", "--name", "x", "--param", "novalue", "--json")
    assert json.loads(bad.stderr) == {
        "status": None,
        "code": "bad-input",
        "field": None,
        "detail": "--param takes KEY=VALUE, not 'novalue'",
    }
