"""``scheduler queues``: how deep each queue is and how fast it moves."""

from __future__ import annotations

import typer

from scheduler_cli.commands.options import JsonFlag
from scheduler_cli.context import context_of
from scheduler_cli.output import Column, Output

QUEUE_COLUMNS: list[Column] = [
    ("QUEUE", lambda q: q["name"]),
    ("DEPTH", lambda q: q.get("depth")),
    ("PENDING", lambda q: q["pending"]),
    ("QUEUED", lambda q: q["queued"]),
    ("RUNNING", lambda q: q["running"]),
    ("CREATED/MIN", lambda q: f"{q['created_per_minute']:g}"),
    ("FINISHED/MIN", lambda q: f"{q['finished_per_minute']:g}"),
]


def queues(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Show every queue's depth and throughput.

    DEPTH is the broker's count (- when it does not say); PENDING, QUEUED and RUNNING are runs
    now, and the rates cover the last minute.
    """
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        answer = api.get("/queues")
    items = answer["items"]
    out.show(answer, lambda: out.table(items, QUEUE_COLUMNS, empty="no queues"))
