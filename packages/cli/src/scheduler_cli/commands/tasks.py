"""``scheduler tasks …``: define, inspect, change, pause, resume, trigger and delete tasks."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from scheduler_cli import lookup
from scheduler_cli.client import ApiClient
from scheduler_cli.commands.options import (
    AllPages,
    FollowRetries,
    Interval,
    JsonFlag,
    Limit,
    Timeout,
)
from scheduler_cli.commands.task_options import (
    Argv,
    At,
    CatchUpCap,
    Concurrency,
    Cron,
    DependsOn,
    Description,
    DstFold,
    DstGap,
    Enabled,
    Every,
    Executor,
    FileOption,
    Labels,
    MaxAttempts,
    MaxConcurrent,
    Misfire,
    MisfireGrace,
    Name,
    Params,
    Priority,
    Queue,
    RateLimit,
    RetryBaseDelay,
    RetryJitter,
    RetryMaxDelay,
    SecretEnv,
    SharedLimits,
    Spread,
    Strategy,
    TaskArg,
    TaskTimeout,
    Team,
    Timezone,
    TriggerRule,
)
from scheduler_cli.commands.task_views import (
    DECISION_COLUMNS,
    TASK_COLUMNS,
    state,
    task_record,
)
from scheduler_cli.context import context_of
from scheduler_cli.errors import BadInput
from scheduler_cli.output import Output, when
from scheduler_cli.param_input import ParamOption, ParamsOption, parse_params
from scheduler_cli.secret_input import secret_env_changes
from scheduler_cli.task_input import TaskFlags, read_document, task_body
from scheduler_cli.watch import wait_and_report, watch_task

app = typer.Typer(
    help="Define, inspect and run tasks. TASK is a task's name or id.",
    no_args_is_help=True,
)


@app.command("list")
def list_tasks(
    ctx: typer.Context,
    prefix: Annotated[str | None, typer.Option(help="Only names starting with this.")] = None,
    queue: Queue = None,
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", help="Only active or only paused ones.")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's (user id).")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team's (name or id).")] = None,
    limit: Limit = 50,
    all_pages: AllPages = False,
    json_output: JsonFlag = False,
) -> None:
    """List tasks."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        tasks, more = api.page(
            "/tasks",
            limit=None if all_pages else limit,
            name_prefix=prefix,
            queue=queue,
            enabled=None if enabled is None else str(enabled).lower(),
            owner_id=owner,
            team_id=lookup.team_id(api, team) if team else None,
        )
    out.show(tasks, lambda: out.table(tasks, TASK_COLUMNS, empty="no tasks"))
    out.more(len(tasks), has_more=more)


@app.command("get")
def get_task(ctx: typer.Context, task: TaskArg, json_output: JsonFlag = False) -> None:
    """Show one task."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        found = lookup.task(api, task)
    out.show(found, lambda: out.record(task_record(found)))


@app.command("create")
def create(
    ctx: typer.Context,
    file: FileOption = None,
    name: Name = None,
    executor: Executor = None,
    argv: Argv = None,
    param: Params = None,
    cron: Cron = None,
    timezone: Timezone = None,
    every: Every = None,
    at: At = None,
    queue: Queue = None,
    team: Team = None,
    description: Description = None,
    priority: Priority = None,
    label: Labels = None,
    limit: SharedLimits = None,
    run_timeout: TaskTimeout = None,
    max_attempts: MaxAttempts = None,
    depends_on: DependsOn = None,
    enabled: Enabled = None,
    secret_env: SecretEnv = None,
    strategy: Strategy = None,
    concurrency: Concurrency = None,
    max_concurrent: MaxConcurrent = None,
    misfire: Misfire = None,
    catch_up_cap: CatchUpCap = None,
    misfire_grace: MisfireGrace = None,
    spread: Spread = None,
    rate_limit: RateLimit = None,
    trigger_rule: TriggerRule = None,
    retry_base_delay: RetryBaseDelay = None,
    retry_max_delay: RetryMaxDelay = None,
    retry_jitter: RetryJitter = None,
    dst_gap: DstGap = None,
    dst_fold: DstFold = None,
    json_output: JsonFlag = False,
) -> None:
    """Create a task from --file and/or flags (flags win).

    Example: scheduler tasks create --name hello --argv 'echo hi' --cron '*/5 * * * *'
    """
    out = Output(json_mode=json_output)
    document = read_document(file)
    secrets = secret_env_changes(secret_env or [], [], stdin_taken=file == "-")
    with context_of(ctx).client() as api:
        flags = TaskFlags(
            name=name,
            executor=executor,
            argv=argv,
            params=param or [],
            cron=cron,
            timezone=timezone,
            interval=every,
            at=at,
            queue=queue,
            team=team,
            description=description,
            priority=priority,
            labels=label,
            limits=limit,
            timeout=run_timeout,
            max_attempts=max_attempts,
            enabled=enabled,
            depends_on=_upstreams(api, depends_on),
            secret_env=secrets,
            strategy=strategy,
            concurrency=concurrency,
            max_concurrent=max_concurrent,
            misfire=misfire,
            catch_up_cap=catch_up_cap,
            misfire_grace=misfire_grace,
            spread=spread,
            rate_limit=rate_limit,
            trigger_rule=trigger_rule,
            retry_base_delay=retry_base_delay,
            retry_max_delay=retry_max_delay,
            retry_jitter=retry_jitter,
            dst_gap=dst_gap,
            dst_fold=dst_fold,
        )
        body = task_body(document, flags)
        if not body.get("name"):
            raise BadInput('a task needs a name: --name, or "name" in --file')
        created = api.post("/tasks", body)
    out.show(created, lambda: out.line(f"created task {created['name']} ({created['id']})"))


@app.command("update")
def update(
    ctx: typer.Context,
    task: TaskArg,
    file: FileOption = None,
    name: Name = None,
    executor: Executor = None,
    argv: Argv = None,
    param: Params = None,
    cron: Cron = None,
    timezone: Timezone = None,
    every: Every = None,
    at: At = None,
    no_schedule: Annotated[
        bool, typer.Option("--no-schedule", help="Remove the schedule (manual runs only).")
    ] = False,
    queue: Queue = None,
    team: Team = None,
    description: Description = None,
    priority: Priority = None,
    label: Labels = None,
    limit: SharedLimits = None,
    run_timeout: TaskTimeout = None,
    max_attempts: MaxAttempts = None,
    depends_on: DependsOn = None,
    enabled: Enabled = None,
    secret_env: SecretEnv = None,
    strategy: Strategy = None,
    concurrency: Concurrency = None,
    max_concurrent: MaxConcurrent = None,
    misfire: Misfire = None,
    catch_up_cap: CatchUpCap = None,
    misfire_grace: MisfireGrace = None,
    spread: Spread = None,
    rate_limit: RateLimit = None,
    trigger_rule: TriggerRule = None,
    retry_base_delay: RetryBaseDelay = None,
    retry_max_delay: RetryMaxDelay = None,
    retry_jitter: RetryJitter = None,
    dst_gap: DstGap = None,
    dst_fold: DstFold = None,
    unset_secret_env: Annotated[
        list[str] | None,
        typer.Option("--unset-secret-env", metavar="NAME", help="Remove a secret (repeatable)."),
    ] = None,
    if_version: Annotated[
        int | None,
        typer.Option(help="Refuse the change unless the task is still at this version."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Change a task's fields.

    --file holds the fields to change (retry and misfire merge key by key, other fields are
    replaced whole); flags change single fields.
    """
    out = Output(json_mode=json_output)
    document = read_document(file)
    secrets = secret_env_changes(secret_env or [], unset_secret_env or [], stdin_taken=file == "-")
    with context_of(ctx).client() as api:
        current = lookup.task(api, task)
        flags = TaskFlags(
            name=name,
            executor=executor,
            argv=argv,
            params=param or [],
            cron=cron,
            timezone=timezone,
            interval=every,
            at=at,
            no_schedule=no_schedule,
            queue=queue,
            team=team,
            description=description,
            priority=priority,
            labels=label,
            limits=limit,
            timeout=run_timeout,
            max_attempts=max_attempts,
            enabled=enabled,
            depends_on=_upstreams(api, depends_on),
            secret_env=secrets,
            strategy=strategy,
            concurrency=concurrency,
            max_concurrent=max_concurrent,
            misfire=misfire,
            catch_up_cap=catch_up_cap,
            misfire_grace=misfire_grace,
            spread=spread,
            rate_limit=rate_limit,
            trigger_rule=trigger_rule,
            retry_base_delay=retry_base_delay,
            retry_max_delay=retry_max_delay,
            retry_jitter=retry_jitter,
            dst_gap=dst_gap,
            dst_fold=dst_fold,
        )
        body = task_body(document, flags, current=current)
        if "params" in body and "params" not in document:
            body["params"] = {**(current.get("params") or {}), **body["params"]}
        if not body:
            raise BadInput("nothing to change: give --file or a flag such as --cron")
        headers = {"If-Match": f'"{if_version}"'} if if_version is not None else None
        updated = api.patch(f"/tasks/{current['id']}", body, headers=headers)
    out.show(
        updated,
        lambda: out.line(f"updated task {updated['name']} (version {updated['version']})"),
    )


def _upstreams(api: ApiClient, refs: list[str] | None) -> list[str] | None:
    return None if refs is None else [lookup.task_id(api, ref) for ref in refs]


@app.command("delete")
def delete(
    ctx: typer.Context,
    task: TaskArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Delete a task and all its runs."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        found = lookup.task(api, task)
        if not yes:
            if not sys.stdin.isatty():
                raise BadInput("deleting needs --yes when stdin is not a terminal")
            typer.confirm(f"Delete task {found['name']} and all its runs?", abort=True)
        api.delete(f"/tasks/{found['id']}")
    out.show(
        {"id": found["id"], "name": found["name"], "deleted": True},
        lambda: out.line(f"deleted task {found['name']} ({found['id']})"),
    )


@app.command("pause")
def pause(ctx: typer.Context, task: TaskArg, json_output: JsonFlag = False) -> None:
    """Pause a task's schedule (manual triggers still work)."""
    _toggle(ctx, task, "pause", json_output)


@app.command("resume")
def resume(ctx: typer.Context, task: TaskArg, json_output: JsonFlag = False) -> None:
    """Resume a paused task's schedule."""
    _toggle(ctx, task, "resume", json_output)


def _toggle(ctx: typer.Context, task: TaskArg, action: str, json_output: bool) -> None:
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        changed = api.post(f"/tasks/{lookup.task_id(api, task)}/{action}")
    next_run = when(changed.get("next_run_at"))
    suffix = f"; next run {next_run}" if next_run and not changed.get("paused") else ""
    out.show(changed, lambda: out.line(f"task {changed['name']} is {state(changed)}{suffix}"))


@app.command("trigger")
def trigger(
    ctx: typer.Context,
    task: TaskArg,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Triggering again with the same key gives the same run, not a new one."),
    ] = None,
    logical_time: Annotated[
        str | None,
        typer.Option(
            "--logical-time",
            metavar="ISO8601",
            help="The logical time the run is for (with its offset, e.g. 2030-01-01T02:00:00Z;"
            " not in the future), so it can complete its dependents' fan-in for that time.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to end; the exit code says how.")
    ] = False,
    timeout: Timeout = None,
    interval: Interval = 1.0,
    follow_retries: FollowRetries = True,
    param: ParamOption = None,
    params: ParamsOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Run a task now (or for an earlier --logical-time), optionally with run parameters
    (-p KEY=VALUE, merged over the task's and checked like its own).

    With --wait the exit code is 0 succeeded, 1 failed, 2 cancelled, 124 --timeout ran out.
    """
    out = Output(json_mode=json_output)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    with context_of(ctx).client() as api:
        task_id = lookup.task_id(api, task)
        body: dict[str, Any] | None = (
            {"logical_time": logical_time} if logical_time is not None else None
        )
        given = parse_params(param, params)
        if given is not None:
            body = {**(body or {}), "params": given}
        answer = api.request("POST", f"/tasks/{task_id}/trigger", json=body, headers=headers)
        run = answer.body
        replayed = answer.headers.get("idempotent-replayed") == "true"
        message = (
            f"run {run['id']} was already triggered with this idempotency key"
            if replayed
            else f"triggered run {run['id']}"
        )
        if wait:
            out.note(message)
            wait_and_report(
                api, out, run, timeout=timeout, interval=interval, follow_retries=follow_retries
            )
    out.show(run, lambda: out.line(message))


@app.command("watch")
def watch(
    ctx: typer.Context,
    task: TaskArg,
    kinds: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            metavar="KIND",
            help="Only these event kinds (run.failed, task.paused, task.slot_skipped…);"
            " repeatable.",
        ),
    ] = None,
    from_start: Annotated[
        bool,
        typer.Option("--from-start", help="First every event of the task still in the log."),
    ] = False,
    timeout: Timeout = None,
    json_output: JsonFlag = False,
) -> None:
    """Watch a task live: its runs' status changes, its edits, pauses and skipped slots, as
    they happen (until Ctrl-C or --timeout). With --json, one event object per line."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        task_id = lookup.task_id(api, task)
        try:
            watch_task(api, out, task_id, kinds=kinds or [], from_start=from_start, timeout=timeout)
        except KeyboardInterrupt:
            return


@app.command("schedule")
def schedule(
    ctx: typer.Context,
    task: TaskArg,
    count: Annotated[int, typer.Option("--next", "-n", min=0, max=100, help="Fire times.")] = 5,
    decisions: Annotated[
        int, typer.Option(min=0, max=100, help="Recent scheduling decisions to show.")
    ] = 10,
    json_output: JsonFlag = False,
) -> None:
    """Show when a task fires next, and what the dispatcher decided about recent slots."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        task_id = lookup.task_id(api, task)
        preview = api.get(f"/tasks/{task_id}/schedule", n=count, decisions=decisions)

    def render() -> None:
        paused = " (paused)" if preview.get("paused") else ""
        out.line(f"next fire times in {preview['timezone']}{paused}:")
        for moment in preview["next_fire_times"] or []:
            out.line(f"  {moment}")
        if not preview["next_fire_times"]:
            out.line("  none")
        out.line("recent decisions:")
        out.table(preview["recent_decisions"], DECISION_COLUMNS, empty="no decisions yet")

    out.show(preview, render)
