"""Task: validation that names the field, scheduling state, pause/resume and labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import validate_executor
from scheduler_domain.schedules import CronSchedule, IntervalSchedule
from scheduler_domain.task import Task

NOW = datetime(2026, 3, 1, 10, 0, 30, tzinfo=UTC)


def _task(**overrides: Any) -> Task:
    fields: dict[str, Any] = {
        "owner_id": "u1",
        "name": "nightly-report",
        "executor": "shell",
        "params": {"argv": ["echo", "hi"]},
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(overrides)
    return Task(**fields)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"executor": "Shell!"}, "executor"),
        ({"params": {"argv": []}}, "params.argv"),
        ({"queue": "bad queue"}, "queue"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"labels": frozenset({"bad label"})}, "labels"),
        ({"timeout": timedelta(0)}, "timeout_seconds"),
        ({"timeout": timedelta(days=8)}, "timeout_seconds"),
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"spread": timedelta(seconds=-1)}, "spread_seconds"),
        ({"depends_on": ("a", "a")}, "depends_on"),
        ({"created_at": datetime(2026, 1, 1)}, "created_at"),
    ],
)
def test_invalid_task_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        _task(**overrides)
    assert info.value.field == field


def test_task_cannot_depend_on_itself() -> None:
    with pytest.raises(ValidationError) as info:
        _task(id="t1", depends_on=("t1",))
    assert info.value.field == "depends_on"


def test_reschedule_points_next_run_at_at_the_next_slot() -> None:
    task = _task(schedule=IntervalSchedule(every=timedelta(minutes=5)))
    task.reschedule(NOW)
    assert task.next_run_at == datetime(2026, 3, 1, 10, 5, tzinfo=UTC)


def test_pause_clears_next_run_at_and_resume_restores_it_from_now() -> None:
    task = _task(schedule=CronSchedule("0 * * * *"))
    task.reschedule(NOW)
    task.pause(NOW)
    assert task.paused
    assert task.next_run_at is None
    later = NOW + timedelta(hours=3)
    task.resume(later)
    assert task.enabled
    assert task.next_run_at == datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
    assert task.updated_at == later


def test_task_without_schedule_has_no_next_run() -> None:
    task = _task()
    task.reschedule(NOW)
    assert task.next_run_at is None


def test_worker_labels_must_cover_the_required_ones() -> None:
    task = _task(labels=frozenset({"gpu", "region=eu"}))
    assert task.runs_on({"gpu", "region=eu", "big"})
    assert not task.runs_on({"gpu"})
    assert _task().runs_on(set())


@pytest.mark.parametrize(
    ("executor", "params", "field"),
    [
        ("shell", {"argv": "echo hi"}, "params.argv"),
        ("shell", {"command": "echo hi"}, "params.command"),
        ("shell", {"shell": True}, "params.command"),
        ("shell", {"argv": ["x"], "env": {"A": 1}}, "params.env"),
        ("shell", {"argv": ["x"], "bogus": 1}, "params.bogus"),
        ("http", {"url": "ftp://x"}, "params.url"),
        ("http", {"url": "https://x", "method": "BREW"}, "params.method"),
        ("http", {"url": "https://x", "expected_status": 700}, "params.expected_status"),
        ("http", {"url": "https://x", "body": "a", "json": {}}, "params.json"),
        ("http", {"url": "https://x", "follow_redirects": "yes"}, "params.follow_redirects"),
        ("python", {"callable": "os.system"}, "params.callable"),
        ("python", {"callable": "m:f", "args": {}}, "params.args"),
        ("python", {"callable": "m:f", "env": {"A": 1}}, "params.env"),
        ("python", {"callable": "m:f", "limits": [1]}, "params.limits"),
        ("python", {"callable": "m:f", "limits": {"cpu": 1}}, "params.limits.cpu"),
        ("shell", {"argv": ["x"], "limits": {"memory_bytes": 0}}, "params.limits.memory_bytes"),
        ("shell", {"argv": ["x"], "limits": {"processes": True}}, "params.limits.processes"),
        ("shell", {"argv": ["x"], "limits": {"open_files": "9"}}, "params.limits.open_files"),
        ("noop", {"sleep_seconds": -1}, "params.sleep_seconds"),
    ],
)
def test_executor_params_are_checked_per_executor(
    executor: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        validate_executor(executor, params)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("executor", "params"),
    [
        ("shell", {"argv": ["echo", "; rm -rf /"]}),
        ("shell", {"shell": True, "command": "echo $HOME | wc -c"}),
        ("http", {"url": "https://example.org/hook", "method": "post", "json": {"a": 1}}),
        ("http", {"url": "http://127.0.0.1:8080", "expected_status": [200, 204]}),
        ("http", {"url": "https://example.org/moved", "follow_redirects": True}),
        ("python", {"callable": "package.module:function", "args": [1], "kwargs": {"a": 2}}),
        ("python", {"callable": "m:f", "env": {"A": "1"}, "limits": {"cpu_seconds": 5}}),
        (
            "shell",
            {
                "argv": ["x"],
                "limits": {
                    "cpu_seconds": 1,
                    "memory_bytes": 10**8,
                    "processes": 5,
                    "open_files": 64,
                },
            },
        ),
        ("noop", {}),
        ("my-plugin", {"anything": ["goes"]}),
    ],
)
def test_valid_executor_params_pass(executor: str, params: dict[str, Any]) -> None:
    validate_executor(executor, params)


# -- environment names and secret_env ---------------------------------------------------------


def _task(**fields: object) -> Task:
    base: dict[str, object] = {
        "owner_id": "o",
        "name": "t",
        "executor": "shell",
        "params": {"argv": ["env"]},
        "created_at": datetime(2030, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2030, 1, 1, tzinfo=UTC),
    }
    base.update(fields)
    return Task(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["A=B", "1X", "", "A B", "X-Y", "É"])
def test_env_names_must_be_posix_names(name: str) -> None:
    with pytest.raises(ValidationError) as error:
        _task(params={"argv": ["env"], "env": {name: "v"}})
    assert error.value.field == "params.env"


def test_posix_env_names_are_accepted() -> None:
    task = _task(params={"argv": ["env"], "env": {"_A1": "v", "path": "x"}})
    assert task.params["env"] == {"_A1": "v", "path": "x"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"secret_env": {"A=B": "sealed"}}, "environment variable name"),
        ({"secret_env": {"SCHEDULER_RUN_ID": "sealed"}}, "SCHEDULER_"),
        ({"secret_env": {"scheduler_x": "sealed"}}, "SCHEDULER_"),
        (
            {"params": {"argv": ["env"], "env": {"T": "1"}}, "secret_env": {"T": "sealed"}},
            "both env and secret_env",
        ),
        ({"executor": "noop", "params": {}, "secret_env": {"T": "sealed"}}, "only for"),
        ({"secret_env": {f"N{i}": "s" for i in range(101)}}, "limited"),
    ],
)
def test_secret_env_rules_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        _task(**fields)
    assert error.value.field == "secret_env"
    assert message in error.value.message


def test_only_secret_env_names_are_shown() -> None:
    task = _task(
        secret_env={"B": "sealed-b", "A": "sealed-a"}, executor="python", params={"callable": "m:f"}
    )
    assert task.secret_env_names == ["A", "B"]
    assert "sealed" not in repr(task)
