"""Server-drawn SVG charts: the geometry is computed here, the markup is the template's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

OUTCOMES = ("succeeded", "failed")
WIDTH, HEIGHT, PAD, AXIS = 600, 160, 24, 18


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    outcome: str
    count: int
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    peak: int
    ticks: list[tuple[float, str]]
    total: dict[str, int]


def runs_per_minute(runs: Sequence[Any], *, now: datetime, minutes: int) -> Chart:
    """Finished runs per minute by outcome (succeeded, or any other final status as failed),
    over the last ``minutes`` minutes, as stacked bars."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    buckets = [dict.fromkeys(OUTCOMES, 0) for _ in range(minutes)]
    for run in runs:
        finished = run.finished_at
        if finished is None or finished < start:
            continue
        index = int((finished - start).total_seconds() // 60)
        if 0 <= index < minutes:
            outcome = "succeeded" if run.status == "succeeded" else "failed"
            buckets[index][outcome] += 1
    peak = max((sum(b.values()) for b in buckets), default=0)
    scale = (HEIGHT - PAD - AXIS) / max(peak, 1)
    slot = (WIDTH - 2 * PAD) / minutes
    bars: list[Bar] = []
    for i, bucket in enumerate(buckets):
        base: float = HEIGHT - AXIS
        minute = (start + timedelta(minutes=i)).strftime("%H:%M")
        for outcome in OUTCOMES:
            count = bucket[outcome]
            if not count:
                continue
            height = count * scale
            base -= height
            bars.append(Bar(PAD + i * slot + 2, base, slot - 4, height, outcome, count, minute))
    ticks = [
        (PAD + i * slot + slot / 2, (start + timedelta(minutes=i)).strftime("%H:%M"))
        for i in range(0, minutes, 3)
    ]
    total = {o: sum(b[o] for b in buckets) for o in OUTCOMES}
    return Chart(WIDTH, HEIGHT, bars, peak, ticks, total)


@dataclass(frozen=True, slots=True)
class Lateness:
    """How late fired slots were created: ``created_at - scheduled_for`` of a scheduled
    run's first attempt (the same measure as the dispatcher's ``schedule_lateness`` metric)."""

    count: int
    p50: timedelta
    p99: timedelta
    worst: timedelta


def _rank(ordered: Sequence[timedelta], fraction: float) -> timedelta:
    """Nearest-rank percentile of a sorted, non-empty sequence."""
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def _fired(runs: Sequence[Any]) -> list[tuple[datetime, timedelta]]:
    """``(slot, lateness)`` of each fired slot among ``runs``: a scheduled run's first attempt,
    created ``created_at - scheduled_for`` after its slot (never negative: fired ahead is on
    time)."""
    return [
        (run.scheduled_for, max(run.created_at - run.scheduled_for, timedelta(0)))
        for run in runs
        if run.trigger == "schedule" and run.attempt == 1
    ]


def slot_lateness(runs: Sequence[Any]) -> Lateness | None:
    """Lateness of the fired slots among ``runs`` (None when there are none): no query of its
    own, it reads the sample the overview already holds."""
    late = sorted(lateness for _slot, lateness in _fired(runs))
    if not late:
        return None
    return Lateness(len(late), _rank(late, 0.5), _rank(late, 0.99), late[-1])


@dataclass(frozen=True, slots=True)
class LatenessBar:
    """One minute of slots: the median lateness drawn inside the worst one."""

    x: float
    width: float
    worst_y: float
    worst_height: float
    median_y: float
    median_height: float
    label: str
    count: int
    median: timedelta
    worst: timedelta


@dataclass(frozen=True, slots=True)
class LatenessChart:
    width: int
    height: int
    bars: list[LatenessBar]
    peak: timedelta
    ticks: list[tuple[float, str]]
    slots: int


def lateness_per_minute(runs: Sequence[Any], *, now: datetime, minutes: int) -> LatenessChart:
    """The fired slots' lateness per minute of slot time over the last ``minutes`` minutes:
    for each minute, the worst and the median, on one scale (the worst minute's worst)."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    buckets: list[list[timedelta]] = [[] for _ in range(minutes)]
    for slot, lateness in _fired(runs):
        index = int((slot - start).total_seconds() // 60)
        if 0 <= index < minutes:
            buckets[index].append(lateness)
    peak = max((max(b) for b in buckets if b), default=timedelta(0))
    usable = HEIGHT - PAD - AXIS
    scale = usable / max(peak.total_seconds(), 0.001)
    slot_width = (WIDTH - 2 * PAD) / minutes
    bars: list[LatenessBar] = []
    for i, bucket in enumerate(buckets):
        if not bucket:
            continue
        ordered = sorted(bucket)
        worst, median = ordered[-1], _rank(ordered, 0.5)
        # A minute with every slot on time still shows as a hairline, not as nothing.
        worst_h = max(worst.total_seconds() * scale, 1.0)
        median_h = max(median.total_seconds() * scale, 1.0)
        base = HEIGHT - AXIS
        bars.append(
            LatenessBar(
                x=PAD + i * slot_width + 2,
                width=slot_width - 4,
                worst_y=base - worst_h,
                worst_height=worst_h,
                median_y=base - median_h,
                median_height=median_h,
                label=(start + timedelta(minutes=i)).strftime("%H:%M"),
                count=len(bucket),
                median=median,
                worst=worst,
            )
        )
    ticks = [
        (PAD + i * slot_width + slot_width / 2, (start + timedelta(minutes=i)).strftime("%H:%M"))
        for i in range(0, minutes, 3)
    ]
    return LatenessChart(WIDTH, HEIGHT, bars, peak, ticks, sum(b.count for b in bars))


QUEUE_STATES = ("running", "queued", "pending")
ROW, LABEL_W = 26, 140


@dataclass(frozen=True, slots=True)
class Segment:
    x: float
    width: float
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class QueueRow:
    name: str
    y: float
    segments: list[Segment]
    total: int
    oldest: timedelta | None
    #: Where the bar ends: its count and wait are written after it.
    end: float


@dataclass(frozen=True, slots=True)
class QueueChart:
    width: int
    height: int
    rows: list[QueueRow]
    peak: int


def queue_depths(queues: Sequence[Any], *, now: datetime) -> QueueChart:
    """One horizontal bar per queue: its running, queued and pending runs stacked, on one
    scale (the fullest queue), with how long its oldest queued run has waited."""
    peak = max((_held(q.activity) for q in queues), default=0)
    usable = WIDTH - LABEL_W - PAD - 90  # room on the right for the count and the wait
    scale = usable / max(peak, 1)
    rows: list[QueueRow] = []
    for i, queue in enumerate(queues):
        activity = queue.activity
        x = float(LABEL_W)
        segments: list[Segment] = []
        for state in QUEUE_STATES:
            count = int(getattr(activity, state))
            if count:
                segments.append(Segment(x, count * scale, state, count))
                x += count * scale
        oldest = activity.oldest_queued_at
        rows.append(
            QueueRow(
                name=queue.name,
                y=PAD + i * ROW,
                segments=segments,
                total=_held(activity),
                oldest=None if oldest is None else max(now - oldest, timedelta(0)),
                end=x,
            )
        )
    return QueueChart(WIDTH, 2 * PAD + max(len(rows), 1) * ROW, rows, peak)


def _held(activity: Any) -> int:
    return int(activity.pending + activity.queued + activity.running)
