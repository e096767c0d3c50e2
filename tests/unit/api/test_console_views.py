"""What the console's pages say in words and draw: schedules, instants in a zone, trace ids,
the dependency graph's layout and the runs-per-minute chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_api.console.charts import (
    lateness_per_minute,
    queue_depths,
    runs_per_minute,
    slot_lateness,
)
from scheduler_api.console.views import (
    NODE_W,
    dependency_graph,
    in_zone,
    schedule_words,
    trace_id,
)
from scheduler_application.ports.repositories import QueueActivity
from scheduler_domain.schedules import CronSchedule, IntervalSchedule, OnceSchedule
from scheduler_domain.task import Task

NOW = datetime(2030, 1, 15, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        (None, "manual only (no schedule)"),
        (IntervalSchedule(every=timedelta(seconds=1)), "every second"),
        (IntervalSchedule(every=timedelta(minutes=5)), "every 5 minutes"),
        (IntervalSchedule(every=timedelta(minutes=90)), "every 1 hour 30 minutes"),
        (CronSchedule(expression="*/5 * * * *"), "every 5 minutes (UTC)"),
        (
            CronSchedule(expression="30 2 * * *", timezone="Europe/Paris"),
            "every day at 02:30 (Europe/Paris)",
        ),
        (CronSchedule(expression="0 9 * * 1-5"), "at 09:00 on weekdays 1-5 (UTC)"),
        (CronSchedule(expression="0 0 1,15 * *"), "cron 0 0 1,15 * * (UTC)"),
        (OnceSchedule(at=NOW), "once, at 2030-01-15 12:00:30 UTC"),
    ],
)
def test_schedules_in_words(schedule: object, words: str) -> None:
    assert schedule_words(schedule) == words  # type: ignore[arg-type]


def test_instants_are_shown_in_the_tasks_zone() -> None:
    assert in_zone(NOW, "Europe/Paris") == "2030-01-15 13:00:30 CET"
    assert in_zone(NOW, "No/Such_Zone") == "2030-01-15 12:00:30 UTC"
    assert in_zone(None) == "—"


def test_trace_id_of_a_traceparent() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id(parent) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id(None) is None
    assert trace_id("garbage") is None


def _task(name: str) -> Task:
    return Task(owner_id="o", name=name, executor="noop", created_at=NOW, updated_at=NOW)


def test_the_graph_puts_upstreams_left_and_dependents_right_with_an_edge_each() -> None:
    task, ups, downs = _task("middle"), [_task("a"), _task("b")], [_task("c")]
    graph = dependency_graph(task, ups, downs)
    by_name = {n.name: n for n in graph.nodes}
    assert by_name["a"].x < by_name["middle"].x < by_name["c"].x
    assert by_name["middle"].current
    assert not by_name["a"].current
    assert len(graph.edges) == 3
    for edge in graph.edges:
        assert edge.x1 < edge.x2
        assert edge.x2 - edge.x1 >= 60
    assert all(n.x + NODE_W <= graph.width for n in graph.nodes)
    assert all(n.y + graph.node_height <= graph.height for n in graph.nodes)


@dataclass
class _Run:
    status: str
    finished_at: datetime | None


def test_the_chart_counts_finished_runs_per_minute_by_outcome() -> None:
    runs = [
        _Run("succeeded", NOW - timedelta(seconds=10)),
        _Run("succeeded", NOW - timedelta(seconds=20)),
        _Run("failed", NOW - timedelta(seconds=25)),
        _Run("cancelled", NOW - timedelta(minutes=3)),
        _Run("succeeded", NOW - timedelta(minutes=30)),  # outside the window
        _Run("running", None),
    ]
    chart = runs_per_minute(runs, now=NOW, minutes=15)
    assert chart.total == {"succeeded": 2, "failed": 2}
    assert chart.peak == 3
    last = [b for b in chart.bars if b.label == "12:00"]
    assert sorted((b.outcome, b.count) for b in last) == [("failed", 1), ("succeeded", 2)]
    tallest = sum(b.height for b in last)
    assert all(b.height <= tallest for b in chart.bars)


@dataclass(frozen=True)
class _Fired:
    trigger: str
    attempt: int
    scheduled_for: datetime
    created_at: datetime


def test_slot_lateness_takes_percentiles_of_first_attempts_of_fired_slots() -> None:
    def fired(seconds: float, trigger: str = "schedule", attempt: int = 1) -> _Fired:
        return _Fired(trigger, attempt, NOW, NOW + timedelta(seconds=seconds))

    runs = [fired(s) for s in range(1, 101)]  # 1 s … 100 s late
    runs += [fired(-5)]  # created ahead of its slot: counts as on time
    runs += [fired(9999, trigger="manual"), fired(9999, attempt=2)]  # not a fired slot
    lateness = slot_lateness(runs)
    assert lateness is not None
    assert lateness.count == 101
    assert lateness.p50 == timedelta(seconds=50)
    assert lateness.p99 == timedelta(seconds=99)
    assert lateness.worst == timedelta(seconds=100)
    one = slot_lateness([fired(3)])
    assert one is not None
    assert one.p50 == one.p99 == timedelta(seconds=3)
    assert slot_lateness([fired(1, trigger="manual")]) is None


def test_the_lateness_chart_shows_each_minute_s_median_inside_its_worst_on_one_scale() -> None:
    def fired(slot: datetime, seconds: float, trigger: str = "schedule") -> _Fired:
        return _Fired(trigger, 1, slot, slot + timedelta(seconds=seconds))

    minute_ago = NOW - timedelta(minutes=1)
    runs = [fired(NOW, s) for s in (1, 2, 30)]  # this minute: median 2 s, worst 30 s
    runs += [fired(minute_ago, 0), fired(minute_ago, -3)]  # on time (and fired ahead)
    runs += [fired(NOW - timedelta(minutes=20), 500)]  # outside the window
    runs += [fired(NOW, 900, trigger="manual")]  # not a fired slot
    chart = lateness_per_minute(runs, now=NOW, minutes=15)
    assert chart.slots == 5
    assert chart.peak == timedelta(seconds=30)
    by_label = {bar.label: bar for bar in chart.bars}
    assert set(by_label) == {"12:00", "11:59"}
    now_bar, on_time = by_label["12:00"], by_label["11:59"]
    assert (now_bar.count, now_bar.median, now_bar.worst) == (
        3,
        timedelta(seconds=2),
        timedelta(seconds=30),
    )
    assert now_bar.worst_height == chart.height - 24 - 18  # the peak fills the plot
    assert now_bar.median_height == now_bar.worst_height * 2 / 30
    assert now_bar.worst_y + now_bar.worst_height == now_bar.median_y + now_bar.median_height
    assert on_time.worst == on_time.median == timedelta(0)
    assert on_time.worst_height == 1.0  # on time is a hairline, not nothing
    assert on_time.x < now_bar.x
    assert lateness_per_minute([], now=NOW, minutes=15).bars == []


@dataclass(frozen=True)
class _Queue:
    name: str
    activity: QueueActivity


def test_the_queue_chart_stacks_running_queued_pending_on_one_scale() -> None:
    queues = [
        _Queue(
            "default",
            QueueActivity(
                queue="default",
                pending=2,
                queued=6,
                running=2,
                oldest_queued_at=NOW - timedelta(seconds=90),
            ),
        ),
        _Queue("gpu", QueueActivity(queue="gpu", running=5)),
        _Queue("idle", QueueActivity(queue="idle")),
    ]
    chart = queue_depths(queues, now=NOW)
    assert chart.peak == 10
    default, gpu, idle = chart.rows
    assert [(s.state, s.count) for s in default.segments] == [
        ("running", 2),
        ("queued", 6),
        ("pending", 2),
    ]
    assert default.total == 10
    assert default.oldest == timedelta(seconds=90)
    # One scale: half the runs, half the length; segments end to end.
    assert gpu.end - gpu.segments[0].x == (default.end - default.segments[0].x) / 2
    assert default.segments[1].x == default.segments[0].x + default.segments[0].width
    assert (gpu.oldest, idle.segments, idle.total) == (None, [], 0)
    assert gpu.y < idle.y
