"""What the templates show, in words: schedules, instants in a zone, durations, trace ids,
and the layout of the small server-drawn SVG pictures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler_domain.schedules import CronSchedule, IntervalSchedule, OnceSchedule, Schedule
from scheduler_domain.task import Task

_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def task_zone(task: Task) -> str:
    return task.schedule.timezone if isinstance(task.schedule, CronSchedule) else "UTC"


def in_zone(instant: datetime | None, zone_name: str = "UTC") -> str:
    if instant is None:
        return "—"
    return instant.astimezone(zone(zone_name)).strftime("%Y-%m-%d %H:%M:%S %Z")


def duration(delta: timedelta | None) -> str:
    if delta is None:
        return "—"
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return every(delta)


def every(delta: timedelta) -> str:
    remaining = int(delta.total_seconds())
    parts = []
    for name, size in _UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
    return " ".join(parts[:2]) or "0 seconds"


_CRON_WORDS = {
    "* * * * *": "every minute",
    "0 * * * *": "every hour, on the hour",
    "0 0 * * *": "every day at midnight",
    "0 0 * * 0": "every Sunday at midnight",
    "0 0 1 * *": "on the first of every month at midnight",
}


def schedule_words(schedule: Schedule | None) -> str:
    """The schedule as a person would say it; cron expressions beyond the simplest shapes are
    shown as they are, with their zone."""
    if schedule is None:
        return "manual only (no schedule)"
    if isinstance(schedule, IntervalSchedule):
        spoken = every(schedule.every)
        return f"every {spoken.removeprefix('1 ')}" if " " not in spoken[2:] else f"every {spoken}"
    if isinstance(schedule, OnceSchedule):
        return f"once, at {in_zone(schedule.at)}"
    return f"{_cron_words(schedule.expression)} ({schedule.timezone})"


def _cron_words(expression: str) -> str:
    fields = expression.split()
    if expression in _CRON_WORDS:
        return _CRON_WORDS[expression]
    if len(fields) == 5:
        minute, hour, dom, month, dow = fields
        if minute.startswith("*/") and (hour, dom, month, dow) == ("*", "*", "*", "*"):
            return f"every {minute[2:]} minutes"
        if minute.isdigit() and hour.isdigit() and (dom, month) == ("*", "*"):
            at = f"{int(hour):02d}:{int(minute):02d}"
            return f"every day at {at}" if dow == "*" else f"at {at} on weekdays {dow}"
    return f"cron {expression}"


def json_text(value: object, indent: int | None = 2) -> str:
    """JSON as a person reads it (keys in their order, no escapes beyond JSON's own); the
    template escapes it for HTML like any text."""
    return json.dumps(value, indent=indent, ensure_ascii=False)


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else None


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    x: int
    y: int
    current: bool = False


@dataclass(frozen=True, slots=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True, slots=True)
class Graph:
    width: int
    height: int
    node_width: int
    node_height: int
    nodes: list[Node]
    edges: list[Edge]


NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 180, 32, 60, 14, 8


def dependency_graph(task: Task, upstreams: list[Task], dependents: list[Task]) -> Graph:
    """Three columns: upstreams → the task → its dependents, edges from box to box."""
    rows = max(len(upstreams), len(dependents), 1)
    height = PAD * 2 + rows * NODE_H + (rows - 1) * GAP_Y
    width = PAD * 2 + 3 * NODE_W + 2 * GAP_X

    def column(tasks: list[Task], index: int) -> list[Node]:
        total = len(tasks) * NODE_H + max(len(tasks) - 1, 0) * GAP_Y
        top = (height - total) // 2
        x = PAD + index * (NODE_W + GAP_X)
        return [Node(t.id, t.name, x, top + i * (NODE_H + GAP_Y)) for i, t in enumerate(tasks)]

    left, right = column(upstreams, 0), column(dependents, 2)
    centre = column([task], 1)[0]
    centre = Node(centre.id, centre.name, centre.x, centre.y, current=True)
    middle = centre.y + NODE_H // 2
    edges = [Edge(n.x + NODE_W, n.y + NODE_H // 2, centre.x, middle) for n in left]
    edges += [Edge(centre.x + NODE_W, middle, n.x, n.y + NODE_H // 2) for n in right]
    return Graph(width, height, NODE_W, NODE_H, [*left, centre, *right], edges)
