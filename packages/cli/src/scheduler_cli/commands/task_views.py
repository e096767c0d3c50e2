"""How tasks look to people: their schedule and state in words, the list's columns and the
fields ``tasks get`` shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler_cli.output import Column, when


def schedule_text(schedule: dict[str, Any] | None) -> str | None:
    if not schedule:
        return None
    if "cron" in schedule:
        return f"cron {schedule['cron']} ({schedule.get('timezone', 'UTC')})"
    if "interval_seconds" in schedule:
        return f"every {schedule['interval_seconds']:g}s"
    if "at" in schedule:
        return f"once at {when(schedule['at'])}"
    return str(schedule)


def state(task: Mapping[str, Any]) -> str:
    """Paused and disabled are one state to the API (``paused`` is ``not enabled``)."""
    return "paused" if task.get("paused") or not task.get("enabled", True) else "active"


TASK_COLUMNS: list[Column] = [
    ("NAME", lambda t: t["name"]),
    ("ID", lambda t: t["id"]),
    ("EXECUTOR", lambda t: t["executor"]),
    ("SCHEDULE", lambda t: schedule_text(t.get("schedule")) or "manual"),
    ("NEXT RUN", lambda t: when(t.get("next_run_at"))),
    ("STATE", state),
    ("QUEUE", lambda t: t["queue"]),
]


def task_record(task: dict[str, Any]) -> list[tuple[str, Any]]:
    retry = task.get("retry") or {}
    return [
        ("name", task["name"]),
        ("id", task["id"]),
        ("description", task.get("description") or None),
        ("owner", task["owner_id"]),
        ("team", task.get("team_id", "-")),
        ("executor", task["executor"]),
        ("params", task.get("params")),
        ("secret env", task.get("secret_env_names") or None),
        ("schedule", schedule_text(task.get("schedule")) or "manual"),
        ("state", state(task)),
        ("next run", when(task.get("next_run_at"))),
        ("queue", task["queue"]),
        ("priority", task["priority"]),
        ("labels", task.get("labels")),
        ("timeout", f"{task['timeout_seconds']:g}s" if task.get("timeout_seconds") else None),
        ("attempts", retry.get("max_attempts")),
        ("concurrency", task.get("concurrency")),
        ("depends on", task.get("depends_on")),
        ("version", task["version"]),
        ("updated", when(task.get("updated_at"))),
    ]


DECISION_COLUMNS: list[Column] = [
    ("SLOT", lambda d: when(d["slot"])),
    ("OUTCOME", lambda d: d["outcome"]),
    ("REASON", lambda d: d.get("reason")),
    ("RUN", lambda d: d.get("run_id")),
    ("AT", lambda d: when(d["at"])),
]
