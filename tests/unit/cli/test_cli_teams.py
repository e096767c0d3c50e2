"""``scheduler teams …``, ``tasks create --team`` and ``apply`` files with a team, against the
real API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness import PASSWORD, Cli

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)


def _json(result) -> Any:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_teams_members_roles_and_tasks_in_a_team(admin: Cli, tmp_path: Path) -> None:
    admin.api.user("bob", Role.USER)
    team = _json(admin("teams", "create", "ops", "--json"))
    assert team["role"] == "admin"
    added = _json(admin("teams", "add", "ops", "bob", "viewer", "--json"))
    assert {m["username"]: m["role"] for m in added["members"]} == {
        "admin": "admin",
        "bob": "viewer",
    }
    listed = _json(admin("teams", "list", "--json"))
    assert sorted(t["name"] for t in listed) == ["@admin", "ops"]
    shown = admin("teams", "show", "ops")
    assert "bob" in shown.stdout
    assert "viewer" in shown.stdout

    task = _json(admin("tasks", "create", "--name", "shared", "--executor", "noop", "--team",
                       "ops", "--json"))  # fmt: skip
    assert task["team_id"] == team["id"]
    in_team = _json(admin("tasks", "list", "--team", "ops", "--json"))
    assert [t["id"] for t in in_team] == [task["id"]]
    assert "team" in admin("tasks", "get", "shared").stdout

    # bob, a viewer of ops: reads the task, may not trigger it.
    bob = Cli(api=admin.api, config_home=tmp_path / "bob", transport=admin.transport,
              runner=admin.runner)  # fmt: skip
    bob.login("bob", PASSWORD)
    assert _json(bob("tasks", "get", task["id"], "--json"))["name"] == "shared"
    refused = bob("tasks", "trigger", task["id"])
    assert refused.exit_code != 0
    assert "read-only" in refused.stderr

    promoted = _json(admin("teams", "set-role", "ops", "bob", "editor", "--json"))
    assert {m["username"]: m["role"] for m in promoted["members"]}["bob"] == "editor"
    assert bob("tasks", "trigger", task["id"]).exit_code == 0

    busy = admin("teams", "delete", "ops")
    assert busy.exit_code != 0
    assert "owns 1 task" in busy.stderr
    assert admin("tasks", "delete", task["id"], "--yes").exit_code == 0
    assert admin("teams", "remove", "ops", "bob").exit_code == 0
    assert admin("teams", "delete", "ops").exit_code == 0
    gone = admin("teams", "show", "ops")
    assert gone.exit_code != 0


def test_apply_puts_tasks_in_the_files_team_and_export_round_trips(
    admin: Cli, tmp_path: Path
) -> None:
    team = _json(admin("teams", "create", "data", "--json"))
    source = tmp_path / "tasks.json"
    source.write_text(
        json.dumps(
            {
                "team": "data",
                "tasks": [
                    {"name": "extract", "executor": "noop"},
                    {"name": "mine", "executor": "noop", "team": "@admin"},
                ],
            }
        )
    )
    done = admin("apply", "-f", str(source))
    assert done.exit_code == 0, done.stdout + done.stderr
    tasks = {t["name"]: t for t in _json(admin("tasks", "list", "--json"))}
    assert tasks["extract"]["team_id"] == team["id"]
    assert tasks["mine"]["team_id"] == tasks["mine"]["owner_id"]

    exported = tmp_path / "exported.json"
    assert admin("export", "-o", str(exported)).exit_code == 0
    written = {t["name"]: t for t in yaml.safe_load(exported.read_text())["tasks"]}
    assert written["extract"]["team"] == "data"
    assert "team" not in written["mine"]  # the personal team goes without saying
    again = admin("apply", "-f", str(exported), "--dry-run")
    assert again.exit_code == 0, again.stdout + again.stderr
    assert "plan: 0 to create, 0 to update, 0 to delete, 2 unchanged" in again.stderr

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"tasks": [{"name": "x", "executor": "noop", "team": "nope"}]}))
    refused = admin("apply", "-f", str(unknown))
    assert refused.exit_code != 0
    assert "team 'nope' not found" in refused.stderr
