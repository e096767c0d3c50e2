"""``docs/api.md`` documents every task field and every parameter of every built-in executor:
the lists are taken from the code (the spec's JSON form, the validators' own refusals), so a
field added without its documentation fails here."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler_application.tasks.spec import parse_task_spec, task_to_spec
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import BUILTIN_EXECUTORS, validate_executor
from scheduler_domain.task import Task

API_DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"
TEXT = API_DOC.read_text(encoding="utf-8")


def _names(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_.]+)`", text))


def _section(start: str, end: str) -> str:
    """The text between the first ``start`` and the next ``end`` after it."""
    begin = TEXT.index(start)
    return TEXT[begin : TEXT.index(end, begin + len(start))]


DOCUMENTED = _names(_section("### Every task field", "### Executor parameters"))


def _accepted_params(executor: str) -> list[str]:
    """The keys the executor's validator accepts, read from its refusal of an unknown one."""
    with pytest.raises(ValidationError) as refused:
        validate_executor(executor, {"not_a_parameter": 1})
    listed = re.search(r"expected one of (\[.*\])", refused.value.message)
    assert listed is not None, refused.value.message
    keys = ast.literal_eval(listed.group(1))
    assert isinstance(keys, list)
    return [str(key) for key in keys]


@pytest.mark.parametrize("executor", sorted(BUILTIN_EXECUTORS))
def test_every_executor_parameter_is_documented(executor: str) -> None:
    documented = _names(_section(f"**`{executor}`**", "\n\n**`" if executor != "noop" else "###"))
    missing = [key for key in _accepted_params(executor) if key not in documented]
    assert not missing, f"docs/api.md does not document {executor} params {missing}"


def _leaves(document: dict[str, Any], prefix: str = "") -> list[str]:
    names: list[str] = []
    for key, value in document.items():
        names.append(prefix + key)
        if isinstance(value, dict) and key not in ("params", "secret_env"):
            names.extend(_leaves(value, f"{prefix}{key}."))
    return names


def test_every_task_field_is_documented() -> None:
    spec = parse_task_spec(
        {
            "name": "t",
            "executor": "noop",
            "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
        }
    )
    now = datetime(2030, 1, 1, tzinfo=UTC)
    task = Task(owner_id="u", created_at=now, updated_at=now, **spec.task_fields())
    fields = _leaves(task_to_spec(task))
    missing = [name for name in fields if name not in DOCUMENTED]
    assert not missing, f"docs/api.md does not document task fields {missing}"
    assert {"schedule.dst_gap", "schedule.dst_fold"} <= set(fields)
