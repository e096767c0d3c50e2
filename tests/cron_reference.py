"""An independent, obviously-right reading of crontab(5), and random expressions to test with.

``matches`` checks one wall time against an expression by set membership, written separately
from the engine (a regular expression per list item, no compilation, no jumping), with Vixie
cron's day rule: day-of-month and day-of-week are OR-ed only when neither field starts with
``*`` (or is ``?``). Slow, so it is walked over short horizons only.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
MONTHS = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (low, high, names) of: second, minute, hour, day-of-month, month, day-of-week
FIELDS = [(0, 59, {}), (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, MONTHS), (0, 7, DAYS)]
_ITEM = re.compile(r"(?P<start>\*|[a-z]+|\d+)(?:-(?P<end>[a-z]+|\d+))?(?:/(?P<step>\d+))?")


@cache
def field_values(text: str, index: int) -> frozenset[int]:
    low, high, names = FIELDS[index]
    if text == "?":
        return frozenset(range(low, high + 1))
    values: set[int] = set()
    for item in text.lower().split(","):
        match = _ITEM.fullmatch(item)
        assert match is not None, item
        start, end, step = match["start"], match["end"], match["step"]
        if start == "*":
            first, last = low, high
        else:
            first = int(names.get(start, start))
            if end is not None:
                last = int(names.get(end, end))
                if index == 5 and end == "sun" and first > 0:
                    last = 7
            else:
                last = high if step else first
        values.update(range(first, last + 1, int(step or 1)))
    if index == 5:
        values = {v % 7 for v in values}
    return frozenset(values)


def fields_of(expression: str) -> list[str]:
    parts = expression.split()
    return parts if len(parts) == 6 else ["0", *parts]


def matches(expression: str, wall: datetime) -> bool:
    """Whether the naive wall time ``wall`` is one the expression fires at."""
    parts = fields_of(expression)
    sets = [field_values(text, i) for i, text in enumerate(parts)]
    if (
        wall.second not in sets[0]
        or wall.minute not in sets[1]
        or wall.hour not in sets[2]
        or wall.month not in sets[4]
    ):
        return False
    dom = wall.day in sets[3]
    dow = wall.isoweekday() % 7 in sets[5]
    either_unrestricted = parts[3][0] in "*?" or parts[5][0] in "*?"
    return (dom and dow) if either_unrestricted else (dom or dow)


def random_expression(rng: random.Random, *, seconds: bool = False, portable: bool = False) -> str:
    """A random crontab expression; ``portable`` keeps to forms cronsim accepts too."""
    fields = [_random_field(rng, i, portable) for i in range(0 if seconds else 1, 6)]
    return " ".join(fields)


def _random_field(rng: random.Random, index: int, portable: bool) -> str:
    low, high, names = FIELDS[index]
    if index == 5 and rng.random() < 0.2:
        high = 6  # keep Sunday mostly 0, as people write it
    kinds = ["*", "n", "range", "*/n", "a-b/n", "a/n", "list", "n-n"]
    weights = [5, 4, 2, 2, 1, 1, 2, 1]
    if index in (3, 5) and not portable:
        kinds.append("?")
        weights.append(1)
    kind = rng.choices(kinds, weights)[0]
    if kind in ("*", "?"):
        return kind
    if kind == "*/n":
        return f"*/{rng.randint(1, high - low + 1)}"
    if kind == "list":
        return ",".join(
            _random_item(rng, low, high, names, portable) for _ in range(rng.randint(2, 4))
        )
    a = rng.randint(low, high)
    b = rng.randint(a, high)
    if kind == "n":
        return _name(rng, a, names, portable)
    if kind == "n-n":
        return f"{_name(rng, a, names, portable)}-{_name(rng, a, names, portable)}"
    if kind == "a/n":
        return f"{_name(rng, a, names, portable)}/{rng.randint(1, high - low + 1)}"
    step = f"/{rng.randint(1, 6)}" if kind == "a-b/n" else ""
    return f"{_name(rng, a, names, portable)}-{_name(rng, b, names, portable, end=True)}{step}"


def _random_item(
    rng: random.Random, low: int, high: int, names: dict[str, int], portable: bool
) -> str:
    a = rng.randint(low, high)
    if rng.random() < 0.5:
        return _name(rng, a, names, portable)
    b = rng.randint(a, high)
    return f"{_name(rng, a, names, portable)}-{_name(rng, b, names, portable, end=True)}"


def _name(
    rng: random.Random, value: int, names: dict[str, int], portable: bool, *, end: bool = False
) -> str:
    """``value`` as written: a number, or sometimes its name in any letter case."""
    by_value = {v: k for k, v in names.items()}
    if value == 7 and names is DAYS and end and not portable:
        by_value[7] = "sun"  # MON-SUN: Sunday ends the range
    if value in by_value and rng.random() < 0.4:
        name = by_value[value]
        return rng.choice([name, name.upper(), name.capitalize()])
    return str(value)


def fires_between(
    expression: str,
    zone: str,
    gap: str,
    fold: str,
    start: datetime,
    end: datetime,
    *,
    step: timedelta = timedelta(minutes=1),
) -> list[datetime]:
    """Fire instants in ``(start, end]`` straight from the definition of the DST policies.

    Walks the instant line ``step`` by step (a minute for five fields, a second for six): an
    instant fires when its wall time matches (at a repeated wall time, the occurrences the fold
    policy names), or, under ``gap="shift"``, when the clocks just jumped over a matching wall
    time.
    """
    tz = ZoneInfo(zone)
    fires = []
    seconds = int(step.total_seconds())
    instant = datetime.fromtimestamp(int(start.timestamp()) // seconds * seconds, UTC) + step
    while instant <= end:
        local = instant.astimezone(tz)
        before = (instant - step).astimezone(tz).utcoffset()
        after = local.utcoffset()
        assert before is not None
        assert after is not None
        wall = local.replace(tzinfo=None)
        ambiguous = local.replace(fold=1 - local.fold).astimezone(UTC) != instant
        if matches(expression, wall) and (
            not ambiguous
            or (local.fold == 0 and fold in ("first", "both"))
            or (local.fold == 1 and fold in ("last", "both"))
        ):
            fires.append(instant)
        elif after > before and gap == "shift":
            skipped = (instant + before).replace(tzinfo=None)
            while skipped < (instant + after).replace(tzinfo=None):
                if matches(expression, skipped):
                    fires.append(instant)
                    break
                skipped += step
        instant += step
    return fires
