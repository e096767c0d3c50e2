"""The shell executor against real processes: no shell injection, no leaked secrets, a capped
output, and nothing left running after a timeout or a cancellation."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from task_interpreter import TASK_PYTHON

from scheduler_application.ports.executor import ExecutionContext
from scheduler_worker.executors import ShellExecutor

pytestmark = pytest.mark.timeout(30)

ContextFactory = Callable[..., ExecutionContext]

HOSTILE_ARGUMENTS = [
    ";id",
    "$(id)",
    "`id`",
    "&& echo pwned",
    "| cat /etc/passwd",
    "> /tmp/pwned",
    "'single' \"double\" \\'",
    "line one\nline two",
    "*",
    "$HOME ${PATH}",
    "",
]


def _executor(**overrides: object) -> ShellExecutor:
    options: dict[str, object] = {"env_allowlist": ["PATH"], "kill_grace_seconds": 1.0}
    options.update(overrides)
    return ShellExecutor(**options)  # type: ignore[arg-type]


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs. A zombie counts as gone: in some containers PID 1 never
    reaps the orphans it inherits, though they are dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _assert_gone(*pids: int) -> None:
    for _ in range(100):  # a SIGKILLed process may take a moment to disappear
        if not any(_running(pid) for pid in pids):
            break
        await asyncio.sleep(0.02)
    assert [pid for pid in pids if _running(pid)] == []


def _pids_in(path: Path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


async def _wait_for_pids(path: Path, count: int) -> list[int]:
    for _ in range(250):
        if len(pids := _pids_in(path)) >= count:
            return pids
        await asyncio.sleep(0.02)
    raise AssertionError(f"the child did not write {count} pids to {path}")


async def test_argv_reaches_printf_literally_without_a_shell(context_for: ContextFactory) -> None:
    result = await _executor().execute(
        context_for({"argv": ["printf", "%s\\n", *HOSTILE_ARGUMENTS]})
    )

    assert result.status == "succeeded"
    assert result.result == {"exit_code": 0}
    assert result.output == "".join(f"{argument}\n" for argument in HOSTILE_ARGUMENTS)


async def test_argv_round_trips_exactly_through_a_python_child(
    context_for: ContextFactory,
) -> None:
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"

    result = await _executor().execute(
        context_for({"argv": [TASK_PYTHON, "-c", script, *HOSTILE_ARGUMENTS]})
    )

    assert result.status == "succeeded"
    assert json.loads(result.output or "") == HOSTILE_ARGUMENTS


async def test_shell_syntax_in_argv_is_a_program_name_not_a_command(
    context_for: ContextFactory,
) -> None:
    result = await _executor().execute(context_for({"argv": ["echo hi && echo pwned"]}))

    assert result.status == "failed"
    assert result.error == "program not found: 'echo hi && echo pwned'"
    assert result.output is None


async def test_child_environment_holds_only_allowlisted_and_task_variables(
    context_for: ContextFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "SCHEDULER__DATABASE__URL": "postgresql://admin:db-secret-1@db/scheduler",
        "SCHEDULER__API__JWT_SECRET": "jwt-secret-2",
        "SCHEDULER__RABBITMQ__PASSWORD": "broker-secret-3",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-4",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ALLOWED_FOR_TASKS", "visible")
    executor = _executor(env_allowlist=["PATH", "ALLOWED_FOR_TASKS", "NOT_SET_ANYWHERE"])

    result = await executor.execute(
        context_for({"argv": ["env"], "env": {"TASK_SETTING": "from the task"}})
    )

    assert result.status == "succeeded"
    output = result.output or ""
    for name, value in secrets.items():
        assert name not in output
        assert value not in output
    child_env = dict(line.split("=", 1) for line in output.splitlines())
    if os.geteuid() == 0:  # an isolated run: HOME and TMPDIR are its private folder
        assert child_env.pop("HOME") == child_env.pop("TMPDIR")
    assert child_env == {
        "PATH": os.environ["PATH"],
        "ALLOWED_FOR_TASKS": "visible",
        "TASK_SETTING": "from the task",
        "SCHEDULER_RUN_ID": "run-42",
        "SCHEDULER_TASK_ID": "task-7",
        "SCHEDULER_ATTEMPT": "3",
    }


async def test_output_past_the_cap_is_dropped_without_blocking_the_child(
    context_for: ContextFactory,
) -> None:
    script = (
        "import sys\n"
        "for _ in range(50): sys.stdout.buffer.write(b'a' * 100_000)\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('end\\n')\n"
    )
    started = time.monotonic()

    result = await _executor(output_limit=1024).execute(
        context_for({"argv": [TASK_PYTHON, "-c", script]}, timeout=20)
    )

    assert result.status == "succeeded"
    assert time.monotonic() - started < 10
    assert result.output == "a" * 1024 + f"\n[output truncated: {5_000_004 - 1024} bytes dropped]"


async def test_task_may_lower_the_output_cap_but_not_raise_it(
    context_for: ContextFactory,
) -> None:
    lowered = await _executor().execute(
        context_for({"argv": ["printf", "0123456789abcdef"], "output_limit": 10})
    )
    raised = await _executor(output_limit=4).execute(
        context_for({"argv": ["printf", "0123456789abcdef"], "output_limit": 1_000})
    )
    unset = await _executor(output_limit=4).execute(
        context_for({"argv": ["printf", "0123456789abcdef"], "output_limit": None})
    )

    assert lowered.output == "0123456789\n[output truncated: 6 bytes dropped]"
    assert raised.output == "0123\n[output truncated: 12 bytes dropped]"
    assert unset.output == raised.output


async def test_stdout_and_stderr_are_captured_interleaved(context_for: ContextFactory) -> None:
    result = await _executor().execute(
        context_for({"shell": True, "command": "echo one; echo two >&2; echo three"})
    )

    assert result.output == "one\ntwo\nthree\n"


async def test_invalid_utf8_is_replaced(context_for: ContextFactory) -> None:
    result = await _executor().execute(context_for({"argv": ["printf", "\\377ok"]}))

    assert result.output == "\ufffdok"


async def test_timeout_kills_the_whole_process_group(context_for: ContextFactory) -> None:
    script = 'sleep 1000 & echo "$!"; echo "$$"; wait'
    started = time.monotonic()

    result = await _executor(kill_grace_seconds=1.0).execute(
        context_for({"argv": ["sh", "-c", script]}, timeout=0.5)
    )

    assert result.status == "timed_out"
    assert result.error == "timed out after 0.5 s"
    grandchild, child = (int(pid) for pid in (result.output or "").split())
    await _assert_gone(child, grandchild)
    assert time.monotonic() - started < 5


async def test_group_ignoring_sigterm_is_killed_after_the_grace(
    context_for: ContextFactory,
) -> None:
    script = 'trap \'\' TERM; sleep 1000 & echo "$!"; echo "$$"; wait; wait'
    started = time.monotonic()

    result = await _executor(kill_grace_seconds=0.5).execute(
        context_for({"argv": ["sh", "-c", script]}, timeout=0.3)
    )

    elapsed = time.monotonic() - started
    assert result.status == "timed_out"
    grandchild, child = (int(pid) for pid in (result.output or "").split())
    await _assert_gone(child, grandchild)
    assert 0.8 <= elapsed < 5


async def test_cancelling_the_execution_kills_the_process_group(
    context_for: ContextFactory, shared_tmp: Path
) -> None:
    tmp_path = shared_tmp
    script = 'sleep 1000 & echo "$!" > pids; echo "$$" >> pids; wait'
    execution = asyncio.create_task(
        _executor(kill_grace_seconds=1.0).execute(
            context_for({"argv": ["sh", "-c", script], "cwd": str(tmp_path)})
        )
    )
    grandchild, child = await _wait_for_pids(tmp_path / "pids", 2)
    assert _running(child)
    assert _running(grandchild)

    execution.cancel()
    with pytest.raises(asyncio.CancelledError):
        await execution

    await _assert_gone(child, grandchild)


async def test_processes_left_behind_by_the_program_are_terminated(
    context_for: ContextFactory,
) -> None:
    started = time.monotonic()

    result = await _executor(kill_grace_seconds=0.5).execute(
        context_for({"argv": ["sh", "-c", 'sleep 1000 & echo "$!"']}, timeout=20)
    )

    assert result.status == "succeeded"
    pid_line, note = (result.output or "").splitlines()
    assert note == "[processes left running by the task were terminated]"
    await _assert_gone(int(pid_line))
    assert time.monotonic() - started < 5


async def test_non_zero_exit_is_a_failure_with_its_code(context_for: ContextFactory) -> None:
    result = await _executor().execute(
        context_for({"argv": ["sh", "-c", "echo bad input >&2; exit 3"]})
    )

    assert result.status == "failed"
    assert result.error == "exit code 3"
    assert result.result == {"exit_code": 3}
    assert result.output == "bad input\n"


async def test_death_by_signal_names_the_signal(context_for: ContextFactory) -> None:
    result = await _executor().execute(context_for({"argv": ["sh", "-c", "kill -KILL $$"]}))

    assert result.status == "failed"
    assert result.error == "killed by signal SIGKILL"
    assert result.result == {"exit_code": -9}


async def test_missing_program_is_a_failed_result(context_for: ContextFactory) -> None:
    result = await _executor().execute(context_for({"argv": ["no-such-program-4f1c"]}))

    assert result.status == "failed"
    assert result.error == "program not found: 'no-such-program-4f1c'"


async def test_missing_working_directory_is_a_failed_result(
    context_for: ContextFactory, shared_tmp: Path
) -> None:
    missing = str(shared_tmp / "absent")

    result = await _executor().execute(context_for({"argv": ["pwd"], "cwd": missing}))

    assert result.status == "failed"
    assert result.error == f"cannot use working directory {missing!r}: No such file or directory"


async def test_cwd_is_honoured(context_for: ContextFactory, shared_tmp: Path) -> None:
    workdir = str(shared_tmp)  # resolved; pwd prints the physical path

    result = await _executor().execute(context_for({"argv": ["pwd"], "cwd": workdir}))

    assert result.output == f"{workdir}\n"


async def test_shell_true_runs_the_command_through_sh(context_for: ContextFactory) -> None:
    result = await _executor().execute(
        context_for({"shell": True, "command": 'echo $((1 + 2)) | tr 3 x && echo "$0"'})
    )

    assert result.status == "succeeded"
    assert result.output == "x\n/bin/sh\n"


async def test_command_without_shell_true_is_refused(context_for: ContextFactory) -> None:
    result = await _executor().execute(context_for({"command": "echo hi"}))

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("invalid parameters (params.command):")
