"""Cost of computing a cron schedule's next fire: ours beside cronsim and croniter.

A fixed (seeded) set of random crontab expressions, time zones and start instants. Each engine
answers "the next fire strictly after this instant" for every input, one call at a time; the
figures are the median, 90th percentile and mean time per call, each the median over
``--rounds`` rounds.

- ``ours (reused)``: ``CronSchedule.next_after`` on a schedule built once, compiled cache warm
  (what the dispatcher does: the task's schedule is parsed once per load).
- ``ours (built per call)``: ``CronSchedule(...)`` then ``next_after``, compiled cache warm.
- ``cronsim``, ``croniter``: their iterator built from an aware start and advanced once
  (neither can be re-pointed at a new start more cheaply).

The engines do not agree on every answer (croniter's day rule and DST handling differ from
crontab's and ours); only the cost is compared here.

Usage:  uv run python scripts/bench_cron.py [--inputs 3000] [--rounds 3] [--seed 13]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from croniter import croniter
from cronsim import CronSim, CronSimError

from scheduler_domain.schedules import CronSchedule

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Pacific/Chatham",
]
BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]


def random_field(rng: random.Random, low: int, high: int) -> str:
    """One crontab field: mostly ``*`` or a number, sometimes a range, step or list."""
    kind = rng.choices(["*", "n", "range", "step", "range-step", "list"], [4, 4, 2, 2, 1, 1])[0]
    if kind == "*":
        return "*"
    if kind == "n":
        return str(rng.randint(low, high))
    if kind == "step":
        return f"*/{rng.randint(2, max(2, (high - low) // 2))}"
    a = rng.randint(low, high)
    b = rng.randint(a, high)
    if kind == "range":
        return f"{a}-{b}"
    if kind == "range-step":
        return f"{a}-{b}/{rng.randint(1, 5)}"
    return ",".join(str(v) for v in sorted(rng.sample(range(low, high + 1), 3)))


def random_inputs(seed: int, count: int) -> list[tuple[str, str, datetime]]:
    rng = random.Random(seed)  # noqa: S311 - reproducible inputs, not secrets
    inputs = []
    while len(inputs) < count:
        expression = " ".join(random_field(rng, low, high) for low, high in BOUNDS)
        try:  # cronsim decides, so that the inputs do not depend on the engine under test
            CronSim(expression, datetime(2000, 1, 1))
        except CronSimError:
            continue  # e.g. 30 February: refused at creation (by ours too)
        offset = timedelta(seconds=rng.randrange(10 * 365 * 86400))
        start = datetime(2020, 1, 1, tzinfo=UTC) + offset
        inputs.append((expression, rng.choice(ZONES), start))
    return inputs


def per_call(calls: list[Callable[[], object]]) -> list[float]:
    """Microseconds each call took."""
    timings = []
    clock = time.perf_counter_ns
    for call in calls:
        began = clock()
        call()
        timings.append((clock() - began) / 1000)
    return timings


def _cronsim_next(expression: str, start: datetime) -> datetime:
    return next(CronSim(expression, start))


def _croniter_next(expression: str, start: datetime) -> datetime:
    answer: datetime = croniter(expression, start).get_next(datetime)
    return answer


def _ours_built(expression: str, zone: str, start: datetime) -> datetime | None:
    return CronSchedule(expression, zone).next_after(start)


def engines(inputs: list[tuple[str, str, datetime]]) -> dict[str, list[Callable[[], object]]]:
    local = [(e, t.astimezone(ZoneInfo(z))) for e, z, t in inputs]
    return {
        "ours (reused)": [partial(CronSchedule(e, z).next_after, t) for e, z, t in inputs],
        "ours (built per call)": [partial(_ours_built, e, z, t) for e, z, t in inputs],
        "cronsim": [partial(_cronsim_next, e, t) for e, t in local],
        "croniter": [partial(_croniter_next, e, t) for e, t in local],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    inputs = random_inputs(args.seed, args.inputs)
    calls = engines(inputs)
    for batch in calls.values():  # warm: compiled cron cache, zone transitions, imports
        per_call(batch)
    medians: dict[str, list[float]] = {name: [] for name in calls}
    means: dict[str, list[float]] = {name: [] for name in calls}
    p90s: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, batch in calls.items():
            timings = per_call(batch)
            medians[name].append(statistics.median(timings))
            means[name].append(statistics.fmean(timings))
            p90s[name].append(statistics.quantiles(timings, n=10)[-1])
    print(f"{len(inputs)} inputs (seed {args.seed}), {args.rounds} rounds; µs per next fire")
    print(f"{'engine':<24}{'median':>10}{'p90':>10}{'mean':>10}   rounds' medians")
    for name in calls:
        rounds = ", ".join(f"{m:.1f}" for m in medians[name])
        print(
            f"{name:<24}{statistics.median(medians[name]):>10.1f}"
            f"{statistics.median(p90s[name]):>10.1f}"
            f"{statistics.median(means[name]):>10.1f}   {rounds}"
        )


if __name__ == "__main__":
    main()
