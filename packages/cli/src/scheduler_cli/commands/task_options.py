"""The options of ``tasks create`` and ``tasks update``, which share nearly all of them."""

from __future__ import annotations

from typing import Annotated

import typer

TaskArg = Annotated[str, typer.Argument(help="The task's name or id.", metavar="TASK")]
FileOption = Annotated[
    str | None,
    typer.Option(
        "--file", "-f", metavar="PATH", help="The task as JSON (see docs/api.md); - for stdin."
    ),
]
Name = Annotated[str | None, typer.Option(help="The task's name (unique per owner).")]
Executor = Annotated[
    str | None, typer.Option(help="shell, http, python or noop (--argv implies shell).")
]
Argv = Annotated[
    str | None,
    typer.Option(help="The shell executor's command line, split like a shell does: 'echo hi'."),
]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        metavar="KEY=VALUE",
        help="An executor parameter (repeatable); VALUE is JSON when it parses as JSON.",
    ),
]
Cron = Annotated[
    str | None,
    typer.Option(help="Cron schedule, 5 fields or 6 with seconds first: '*/2 * * * * *'."),
]
Timezone = Annotated[str | None, typer.Option(help="The cron schedule's zone, e.g. Europe/Berlin.")]
Every = Annotated[float | None, typer.Option("--every", help="Run every N seconds.")]
At = Annotated[str | None, typer.Option(help="Run once at this time (2030-01-01T00:00:00Z).")]
Queue = Annotated[str | None, typer.Option(help="Queue the runs go to.")]
Team = Annotated[
    str | None,
    typer.Option(
        help="The team (name or id) the task belongs to: one where you are an editor or admin. "
        "Default on create: your personal team; on update, a different team moves the task.",
        metavar="TEAM",
    ),
]
Description = Annotated[str | None, typer.Option(help="What the task is for.")]
Priority = Annotated[int | None, typer.Option(help="0 (lowest) to 9.")]
Labels = Annotated[
    list[str] | None, typer.Option("--label", help="Worker label required (repeatable).")
]
SharedLimits = Annotated[
    list[str] | None,
    typer.Option(
        "--limit",
        help="A named shared limit the task's runs draw on (repeatable; it must exist). On "
        "update the list given replaces the task's.",
    ),
]
TaskTimeout = Annotated[float | None, typer.Option("--run-timeout", help="Seconds a run may take.")]
MaxAttempts = Annotated[int | None, typer.Option(help="Attempts in all, retries included.")]
DependsOn = Annotated[
    list[str] | None,
    typer.Option("--depends-on", metavar="TASK", help="Upstream task, name or id (repeatable)."),
]
Enabled = Annotated[
    bool | None, typer.Option("--enabled/--disabled", help="Enabled (default) or paused.")
]
SecretEnv = Annotated[
    list[str] | None,
    typer.Option(
        "--secret-env",
        metavar="NAME=@FILE",
        help="A write-only environment variable, encrypted on the server and never shown "
        "(repeatable): NAME=@path reads the file, NAME=@- stdin, NAME alone asks without "
        "echo; NAME=VALUE works too but leaves VALUE in your shell history.",
    ),
]
Strategy = Annotated[
    str | None,
    typer.Option(help="How runs pick a worker: queue, round_robin, least_loaded or random."),
]
Concurrency = Annotated[
    str | None,
    typer.Option(help="When a run is still active: allow, forbid, replace or buffer_one."),
]
MaxConcurrent = Annotated[
    str | None,
    typer.Option(metavar="N|none", help="At most N active runs of the task; none: no cap."),
]
Misfire = Annotated[
    str | None,
    typer.Option(help="Slots missed (the dispatcher was down): skip, run_once or catch_up."),
]
CatchUpCap = Annotated[
    int | None, typer.Option(help="catch_up: at most this many of the newest missed slots.")
]
MisfireGrace = Annotated[
    float | None,
    typer.Option(help="Seconds late a slot may still run as if on time."),
]
Spread = Annotated[
    float | None,
    typer.Option("--spread", help="Spread each run up to N seconds after its slot (stable)."),
]
RateLimit = Annotated[
    str | None,
    typer.Option(
        metavar="LIMIT|none", help="At most this many runs per period: 10/m, 5/10s; none: no limit."
    ),
]
TriggerRule = Annotated[
    str | None,
    typer.Option(help="When upstream runs let this task run, e.g. all_success, all_done."),
]
RetryBaseDelay = Annotated[
    float | None, typer.Option(help="Seconds before the first retry (doubling after).")
]
RetryMaxDelay = Annotated[float | None, typer.Option(help="Longest wait between retries.")]
RetryJitter = Annotated[
    float | None, typer.Option(help="Up to this many seconds added to each retry's wait.")
]
DstGap = Annotated[
    str | None,
    typer.Option(help="A cron time the DST change skips: shift (run after the gap) or skip."),
]
DstFold = Annotated[
    str | None,
    typer.Option(help="A cron time the DST change repeats: first, last or both."),
]
