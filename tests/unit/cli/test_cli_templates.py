"""``scheduler templates …`` against the real API: create from a file, subscribe with -p,
the field named when a parameter is wrong, bulk from a file of users (per item), a template
change reaching the subscription, and a trigger with run parameters shown by ``runs get``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_harness import Cli

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)

TEMPLATE = """
name: report
executor: noop
params:
  sleep_seconds: "{{pause}}"
params_schema:
  type: object
  properties:
    pause: {type: number, minimum: 0, maximum: 5, default: 0}
    team: {type: string}
  required: [team]
  additionalProperties: false
schedule: {interval_seconds: 3600}
schedule_bounds: {min_interval_seconds: 600}
policies: {priority: 2}
"""


def test_template_commands_round_trip(admin: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "report.yaml"
    spec.write_text(TEMPLATE, encoding="utf-8")
    created = admin("templates", "create", "-f", str(spec), "--json")
    assert created.exit_code == 0, created.stderr
    assert json.loads(created.stdout)["version"] == 1
    assert "report" in admin("templates", "list").stdout

    wrong = admin("templates", "subscribe", "report", "-p", "team=ops", "-p", "pause=9")
    assert wrong.exit_code != 0
    assert "params.pause" in wrong.stderr
    too_often = admin("templates", "subscribe", "report", "-p", "team=ops", "--every", "60")
    assert too_often.exit_code != 0
    assert "schedule" in too_often.stderr

    mine = admin("templates", "subscribe", "report", "-p", "team=ops", "-p", "pause=1", "--json")
    assert mine.exit_code == 0, mine.stderr
    task = json.loads(mine.stdout)
    assert task["params"] == {"sleep_seconds": 1}
    assert task["template_params"] == {"team": "ops", "pause": 1}

    patch = tmp_path / "patch.yaml"
    patch.write_text("policies: {priority: 8}\n", encoding="utf-8")
    assert admin("templates", "update", "report", "-f", str(patch)).exit_code == 0
    subscriptions = json.loads(admin("templates", "subscriptions", "report", "--json").stdout)
    assert [(s["priority"], s["template_version"]) for s in subscriptions] == [(8, 2)]

    bad_run = admin("tasks", "trigger", task["name"], "-p", "pause=-1")
    assert bad_run.exit_code != 0
    assert "params.pause" in bad_run.stderr
    run = json.loads(admin("tasks", "trigger", task["name"], "-p", "pause=2", "--json").stdout)
    shown = admin("runs", "get", run["id"])
    assert shown.exit_code == 0, shown.stderr
    assert '"pause": 2' in shown.stdout
    assert '{"sleep_seconds": 2}' in shown.stdout

    changed = admin("templates", "set-params", task["name"], "-p", "team=data", "--json")
    assert json.loads(changed.stdout)["template_params"] == {"team": "data", "pause": 1}


def test_bulk_subscription_from_a_file_answers_each_user(admin: Cli, tmp_path: Path) -> None:
    admin.api.user("ann", Role.USER)
    admin.api.user("ben", Role.USER)
    spec = tmp_path / "report.yaml"
    spec.write_text(TEMPLATE, encoding="utf-8")
    assert admin("templates", "create", "-f", str(spec)).exit_code == 0
    users = tmp_path / "users.yaml"
    users.write_text(
        "- {owner: ann, params: {team: a}}\n"
        "- {owner: ben, params: {team: 5}}\n"
        "- {owner: ben, params: {team: b}, name: report-b}\n",
        encoding="utf-8",
    )
    result = admin("templates", "subscribe", "report", "--file", str(users))
    assert result.exit_code == 1  # one refused
    assert "2 created, 1 refused" in result.stdout
    assert "#1: params.team" in result.stdout


def test_export_writes_a_subscription_that_apply_recreates(admin: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "report.yaml"
    spec.write_text(TEMPLATE, encoding="utf-8")
    assert admin("templates", "create", "-f", str(spec)).exit_code == 0
    mine = admin("templates", "subscribe", "report", "-p", "team=ops", "--json")
    assert mine.exit_code == 0, mine.stderr
    exported = tmp_path / "exported.yaml"
    assert admin("export", "-o", str(exported)).exit_code == 0
    document = yaml.safe_load(exported.read_text())
    assert document["tasks"] == []
    [item] = document["subscriptions"]
    assert (item["template"], item["params"]) == ("report", {"team": "ops"})

    assert admin("tasks", "delete", json.loads(mine.stdout)["id"], "--yes").exit_code == 0
    recreated = admin("apply", "-f", str(exported))
    assert recreated.exit_code == 0, recreated.stderr
    assert "+ create subscription report" in recreated.stdout
    subscriptions = json.loads(admin("templates", "subscriptions", "report", "--json").stdout)
    assert [s["template_params"] for s in subscriptions] == [{"team": "ops"}]
