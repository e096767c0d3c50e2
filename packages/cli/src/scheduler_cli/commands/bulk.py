"""``scheduler runs bulk …`` and ``scheduler tasks bulk …``: one action on many runs or tasks,
chosen by ids or by the list filters; the count is shown and confirmed first."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from scheduler_cli import lookup, times
from scheduler_cli.client import ApiClient
from scheduler_cli.commands.options import JsonFlag
from scheduler_cli.context import context_of
from scheduler_cli.errors import BadInput
from scheduler_cli.output import Output

Ids = Annotated[
    list[str] | None, typer.Option("--id", help="A run or task id (repeatable; at most 1,000).")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only count what the selection matches.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]

RUN_ACTIONS = ("cancel", "retry", "retrigger")
TASK_ACTIONS = ("pause", "resume", "delete")


def run_bulk(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="cancel, retry or retrigger.")],
    ids: Ids = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task name or id.")] = None,
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Runs in this status (repeatable).")
    ] = None,
    trigger: Annotated[
        str | None, typer.Option(help="schedule, manual, dependency or retry.")
    ] = None,
    worker: Annotated[str | None, typer.Option(help="Worker name or id.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Created after this time or span ago (2h).")
    ] = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    json_output: JsonFlag = False,
) -> None:
    """Cancel, retry or re-trigger many runs: by --id, or by the filters of `runs list`.

    Example: scheduler runs bulk retry --status dead_lettered --task nightly
    """
    if action not in RUN_ACTIONS:
        raise BadInput(f"the action must be one of {', '.join(RUN_ACTIONS)}")
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        run_filter = None
        if not ids:
            run_filter = {
                "task_id": lookup.task_id(api, task) if task else None,
                "status": status or None,
                "trigger": trigger,
                "worker_id": lookup.worker_id(api, worker) if worker else None,
                "created_after": times.since(since) if since else None,
            }
            run_filter = {k: v for k, v in run_filter.items() if v is not None}
        _carry_out(api, out, "runs", action, ids, run_filter, dry_run=dry_run, yes=yes)


def task_bulk(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="pause, resume or delete.")],
    ids: Ids = None,
    prefix: Annotated[str | None, typer.Option(help="Tasks whose name starts with this.")] = None,
    queue: Annotated[str | None, typer.Option(help="Tasks of this queue.")] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", help="Only active or only paused ones.")
    ] = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    json_output: JsonFlag = False,
) -> None:
    """Pause, resume or delete many tasks: by --id, or by the filters of `tasks list`.

    Example: scheduler tasks bulk pause --prefix etl-
    """
    if action not in TASK_ACTIONS:
        raise BadInput(f"the action must be one of {', '.join(TASK_ACTIONS)}")
    out = Output(json_mode=json_output)
    task_filter = None
    if not ids:
        task_filter = {
            k: v
            for k, v in {"name_prefix": prefix, "queue": queue, "enabled": enabled}.items()
            if v is not None
        }
    with context_of(ctx).client() as api:
        _carry_out(api, out, "tasks", action, ids, task_filter, dry_run=dry_run, yes=yes)


def _carry_out(
    api: ApiClient,
    out: Output,
    kind: str,
    action: str,
    ids: list[str] | None,
    selection_filter: dict[str, Any] | None,
    *,
    dry_run: bool,
    yes: bool,
) -> None:
    body: dict[str, Any] = {"action": action}
    if ids:
        body["ids"] = ids
    else:
        body["filter"] = selection_filter or {}
    counted = api.post(f"/{kind}/bulk", {**body, "dry_run": True})
    matched = int(counted["matched"])
    if dry_run:
        out.show(counted, lambda: out.line(f"{matched} {kind} match; {action} would act on them"))
        return
    if matched == 0:
        out.show(counted, lambda: out.note(f"no {kind} match"))
        return
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput(f"{action} of {matched} {kind} needs --yes when stdin is not a terminal")
        typer.confirm(f"{action.capitalize()} {matched} {kind}?", abort=True)
    operation = api.post(f"/{kind}/bulk", {**body, "wait_seconds": 2})
    while operation["status"] == "running":
        if not out.json_mode:
            out.note(f"{operation['done']}/{operation['total']} done")
        time.sleep(1)
        operation = api.get(f"/operations/{operation['id']}")
    out.show(operation, lambda: _summary(out, kind, operation))


def _summary(out: Output, kind: str, operation: dict[str, Any]) -> None:
    out.line(
        f"{operation['action']}: {operation['succeeded']} done, {operation['skipped']} skipped, "
        f"{operation['failed']} failed of {operation['total']} {kind}"
        + (f" (operation {operation['id']} {operation['status']})" if operation["error"] else "")
    )
    for item in operation["results"]:
        if item["outcome"] != "succeeded":
            out.line(f"  {item['outcome']} {item['id']}: {item.get('detail', '')}")


def run_batch(
    ctx: typer.Context,
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Trigger this task (name or id).")
    ] = None,
    count: Annotated[int, typer.Option(help="How many runs of --task.", min=1)] = 1,
    priority: Annotated[int | None, typer.Option(help="Priority 0-9 over the task's.")] = None,
    key_prefix: Annotated[
        str | None,
        typer.Option(help="Idempotency keys PREFIX-1 … PREFIX-N (a rerun creates nothing)."),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            help='Triggers from a file (YAML or JSON list of {"task_id", "idempotency_key", '
            '"priority", "logical_time", "params"}; - for stdin).',
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Trigger many runs in one request (one transaction): --task with --count, or --file.

    Example: scheduler runs batch --task nightly --count 100 --key-prefix backfill-2030-01
    """
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        if file is not None:
            document = _read_triggers(file)
        elif task is not None:
            task_id = lookup.task_id(api, task)
            document = [
                {
                    "task_id": task_id,
                    **({"priority": priority} if priority is not None else {}),
                    **({"idempotency_key": f"{key_prefix}-{i}"} if key_prefix else {}),
                }
                for i in range(1, count + 1)
            ]
        else:
            raise BadInput("give --task (with --count) or --file")
        answer = api.post("/runs/batch", {"triggers": document})
    out.show(answer, lambda: _batch_summary(out, answer))


def _read_triggers(source: str) -> list[dict[str, Any]]:
    label = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot read {label}: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadInput(f"{label} is not valid YAML or JSON: {error}") from None
    if isinstance(document, dict) and isinstance(document.get("triggers"), list):
        document = document["triggers"]
    if not isinstance(document, list):
        raise BadInput(f'{label} must hold a list of triggers (or {{"triggers": [...]}})')
    return document


def _batch_summary(out: Output, answer: dict[str, Any]) -> None:
    out.line(
        f"{answer['created']} created, {answer['replayed']} replayed, {answer['refused']} refused"
    )
    for index, result in enumerate(answer["results"]):
        if result["status"] == "refused":
            error = result["error"] or {}
            out.line(f"  #{index}: {error.get('field')}: {error.get('detail')}")
