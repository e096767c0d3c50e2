"""How results look: rich tables for people, JSON for scripts, one-line messages on stderr.

With ``--json`` stdout carries exactly one JSON document (or, for streaming commands, one JSON
object per line) and nothing else; notes, progress and errors always go to stderr. Values from
the server are shown as plain text, never interpreted as rich markup, and their control
characters (terminal escape sequences, bidirectional overrides) are shown escaped (``\x1b``)
rather than sent to the terminal: a task's output or a field someone else wrote must not be able
to retitle the window, rewrite the screen or set the clipboard of the person reading it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Row = Mapping[str, Any]
#: A column: its header and how to get the cell from a row.
Column = tuple[str, Callable[[Row], Any]]
UNBOUNDED_WIDTH = 100_000


def console(stream: TextIO) -> Console:
    """A console on ``stream`` as it is now (CliRunner and pipes swap the streams)."""
    return Console(file=stream, highlight=False)


def error(message: str) -> None:
    """``error: …`` on stderr, on one line whatever the terminal width."""
    _line(sys.stderr, "error", message)


def error_json(problem: dict[str, object]) -> None:
    """The failure of a ``--json`` command: one JSON object on one line of stderr."""
    sys.stderr.write(json.dumps(problem, ensure_ascii=False) + "\n")
    sys.stderr.flush()


def warning(message: str) -> None:
    _line(sys.stderr, "warning", message)


_COLOURS = {"error": "31", "warning": "33"}
#: C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` safe for a terminal: control characters escaped (``\x1b``); with ``lines``
    tabs and line breaks stay, else they are escaped too (one cell, one line)."""
    escaped = _CONTROL.sub(_escape, text)
    if not lines:
        escaped = escaped.replace("\t", "\\t").replace("\n", "\\n")
    return escaped


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _line(stream: TextIO, label: str, message: str) -> None:
    text = printable(" ".join(message.split()))
    prefix = f"{label}:"
    if stream.isatty() and not os.environ.get("NO_COLOR"):
        prefix = f"\x1b[{_COLOURS[label]}m{prefix}\x1b[0m"
    stream.write(f"{prefix} {text}\n")
    stream.flush()


class Output:
    """Where one command writes: JSON or tables on stdout, notes on stderr."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.stdout = console(sys.stdout)
        self.stderr = console(sys.stderr)

    def show(self, value: Any, render: Callable[[], None]) -> None:
        """``value`` as JSON, or ``render()`` for people."""
        if self.json_mode:
            self.json(value)
        else:
            render()

    def json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def json_line(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def table(
        self, rows: Sequence[Row], columns: Sequence[Column], *, empty: str = "nothing found"
    ) -> None:
        if not rows:
            self.note(empty)
            return
        table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
        for header, _ in columns:
            table.add_column(header, no_wrap=True)
        for row in rows:
            table.add_row(*(Text(cell(get(row))) for _, get in columns))
        self._print(table)

    def record(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """One object as aligned ``key  value`` lines."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(overflow="fold")
        for key, value in pairs:
            grid.add_row(Text(key), Text(cell(value)))
        self._print(grid)

    def _print(self, renderable: Table) -> None:
        """Rows stay whole (ids are for copying): a table wider than the terminal is printed
        at its natural width and the terminal wraps it, as ``ps`` does. A pipe or file gets
        the lines without the trailing blanks that pad every cell."""
        unbounded = self.stdout.options.update_width(UNBOUNDED_WIDTH)
        natural = Measurement.get(self.stdout, unbounded, renderable).maximum
        wide = Console(
            file=self.stdout.file,
            width=max(self.stdout.width, natural),
            force_terminal=self.stdout.is_terminal,
            highlight=False,
        )
        if wide.is_terminal:
            wide.print(renderable, crop=False)
            return
        with wide.capture() as captured:
            wide.print(renderable, crop=False)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))

    def line(self, message: str) -> None:
        """A result line for people (nothing in JSON mode)."""
        if not self.json_mode:
            self.stdout.print(Text(printable(message, lines=True)), soft_wrap=True)

    def note(self, message: str) -> None:
        """Something for the person at the terminal, never part of the result."""
        self.stderr.print(Text(printable(message, lines=True), style="dim"), soft_wrap=True)

    def more(self, shown: int, *, has_more: bool) -> None:
        if has_more:
            self.note(f"showing the first {shown}; use --limit N or --all for more")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return printable(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))
    return printable(str(value))


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def when(value: str | None) -> str | None:
    """An API timestamp as ``2030-01-01 02:00:00Z`` (UTC, to the second)."""
    moment = parse_time(value)
    if moment is None:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def elapsed(start: str | None, end: str | None) -> str | None:
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        return None
    return duration(max(0.0, (last - first).total_seconds()))
