"""The tasks file's JSON Schema in docs/ is the one the code derives (no drift), and the example
in docs/tasks-as-code.md is a valid file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from scheduler_api.openapi import tasks_file_schema
from scheduler_application.accounts.access import Principal
from scheduler_application.tasks.apply import TaskApplyService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(30)

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_the_committed_schema_is_the_derived_one() -> None:
    committed = json.loads((DOCS / "schemas" / "tasks-file.schema.json").read_text())
    assert committed == tasks_file_schema(), (
        "regenerate: uv run python -c 'import json; from scheduler_api.openapi import "
        "tasks_file_schema; print(json.dumps(tasks_file_schema(), indent=2, sort_keys=True))'"
        " > docs/schemas/tasks-file.schema.json"
    )
    task = committed["properties"]["tasks"]["items"]
    assert "secret_env" not in task["properties"]
    assert task["additionalProperties"] is False


async def test_the_documented_example_applies() -> None:
    text = (DOCS / "tasks-as-code.md").read_text()
    (example,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    document = yaml.safe_load(example)
    uow = InMemoryUnitOfWorkFactory(InMemoryStore())
    clock = FakeClock()
    tasks = TaskService(uow_factory=uow, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    applier = TaskApplyService(uow_factory=uow, tasks=tasks)
    result = await applier.apply(document, principal=Principal("u", Role.USER))
    assert [(c.name, c.action) for c in result.changes] == [
        ("extract", "create"),
        ("report", "create"),
    ]
