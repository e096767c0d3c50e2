"""``scheduler apply -f`` and ``scheduler export`` against the real API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_harness import Cli

pytestmark = pytest.mark.timeout(60)

TASKS_YAML = """\
tasks:
  - name: extract
    executor: noop
    schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}
  - name: report
    executor: noop
    depends_on: [extract]
    schedule: {cron: "0 3 * * *", timezone: Europe/Berlin}
    retry: {max_attempts: 3}
"""


def test_apply_a_yaml_file_then_export_and_apply_again_changes_nothing(
    admin: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "tasks.yaml"
    source.write_text(TASKS_YAML)

    plan = admin("apply", "-f", str(source), "--dry-run")
    assert plan.exit_code == 0, plan.stderr
    assert "+ create extract" in plan.stdout
    assert "+ create report" in plan.stdout
    assert "plan: 2 to create" in plan.stderr
    assert json.loads(admin("tasks", "list", "--json").stdout) == []

    done = admin("apply", "-f", str(source))
    assert done.exit_code == 0, done.stderr
    assert "2 created" in done.stderr

    exported = tmp_path / "exported.yaml"
    result = admin("export", "-o", str(exported))
    assert result.exit_code == 0, result.stderr
    document = yaml.safe_load(exported.read_text())
    assert [t["name"] for t in document["tasks"]] == ["extract", "report"]
    assert document["tasks"][1]["depends_on"] == ["extract"]

    again = admin("apply", "-f", str(exported), "--prune", "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["summary"] == {
        "create": 0,
        "update": 0,
        "delete": 0,
        "unchanged": 2,
    }


def test_a_changed_file_prints_the_field_diff_and_prune_deletes(admin: Cli, tmp_path: Path) -> None:
    source = tmp_path / "tasks.yaml"
    source.write_text(TASKS_YAML)
    assert admin("apply", "-f", str(source)).exit_code == 0
    source.write_text(
        "tasks:\n  - name: extract\n    executor: noop\n    priority: 7\n"
        '    schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}\n'
    )
    plan = admin("apply", "-f", str(source), "--prune", "--dry-run")
    assert plan.exit_code == 0, plan.stderr
    assert "~ update extract" in plan.stdout
    assert "priority: 5 -> 7" in plan.stdout
    assert "- delete report" in plan.stdout
    assert admin("apply", "-f", str(source), "--prune").exit_code == 0
    names = [t["name"] for t in json.loads(admin("tasks", "list", "--json").stdout)]
    assert names == ["extract"]


def test_a_bad_file_is_refused_naming_the_field(admin: Cli, tmp_path: Path) -> None:
    source = tmp_path / "tasks.yaml"
    source.write_text("tasks:\n  - name: a\n    executor: noop\n    priority: high\n")
    result = admin("apply", "-f", str(source), "--json")
    assert result.exit_code != 0
    problem = json.loads(result.stderr)
    assert problem["field"] == "tasks[0].priority"
    source.write_text("tasks: [oops")
    result = admin("apply", "-f", str(source))
    assert result.exit_code != 0
    assert "not valid YAML" in result.stderr
