"""The ``shell`` executor: a program run from an argument list, never through a shell unless
the task asks for one with ``shell: true``.

Each run gets its own session (so its own process group): a timeout or a cancellation signals
the whole group — SIGTERM, ``kill_grace_seconds``, then SIGKILL — so grandchildren die with the
program. Processes the program leaves behind when it exits are terminated the same way: a run
owns its process group. Orphans are reparented to PID 1, which must reap them (run the worker
under an init such as tini or ``docker run --init``); a zombie still counts as a group member,
so without one each termination waits out the grace period.

The child's environment holds only the allow-listed variables of the worker's environment, the
task's ``env`` and ``SCHEDULER_RUN_ID``/``SCHEDULER_TASK_ID``/``SCHEDULER_ATTEMPT``: the
worker's own secrets (database URL, signing keys, broker password) never reach task code.
POSIX only.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import validate_executor
from scheduler_worker.executors.output import DEFAULT_OUTPUT_LIMIT, CappedOutput
from scheduler_worker.executors.results import failed, invalid_params, succeeded, timed_out

#: Variables a child usually needs and that carry no secret; a sensible allow-list to start from.
DEFAULT_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")

_SHELL = "/bin/sh"
_POLL_SECONDS = 0.05
#: After the group is gone: how long to wait for the exit status and for the pipe to close
#: (a process that left the group with setsid may still hold it; it is not waited for).
_REAP_SECONDS = 5.0
_DRAIN_SECONDS = 2.0


class ShellExecutor:
    name = "shell"

    def __init__(
        self,
        *,
        env_allowlist: Sequence[str],
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        kill_grace_seconds: float = 5.0,
    ) -> None:
        self._env_allowlist = tuple(env_allowlist)
        self._output_limit = output_limit
        self._kill_grace_seconds = kill_grace_seconds

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        params = context.params
        try:
            validate_executor(self.name, params)
        except ValidationError as exc:
            return invalid_params(exc)
        argv = [_SHELL, "-c", params["command"]] if params.get("shell") else list(params["argv"])
        cwd: str | None = params.get("cwd")
        # A task may lower the cap, not raise it past what the worker is willing to hold.
        requested = params.get("output_limit")
        output = CappedOutput(
            self._output_limit if requested is None else min(requested, self._output_limit)
        )
        loop = asyncio.get_running_loop()
        try:
            transport, child = await loop.subprocess_exec(
                lambda: _ChildProtocol(output, loop),
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=cwd,
                env=self._child_env(context),
                start_new_session=True,
            )
        except OSError as exc:
            return failed(_spawn_error(exc, argv[0], cwd))
        # start_new_session makes the child a session and group leader: pgid == pid.
        pgid = transport.get_pid()
        notes: list[str] = []
        try:
            await asyncio.wait([child.exited], timeout=context.timeout_seconds)
            expired = not child.exited.done()
            if expired:
                await self._terminate_group(pgid)
            elif _group_exists(pgid):
                notes.append("[processes left running by the task were terminated]")
                await self._terminate_group(pgid)
            await asyncio.wait([child.exited], timeout=_REAP_SECONDS)
            await asyncio.wait([child.pipe_closed], timeout=_DRAIN_SECONDS)
        except asyncio.CancelledError:
            await self._terminate_group(pgid)
            raise
        finally:
            transport.close()
        text = output.text()
        if notes:
            text = _append_lines(text, notes)
        if expired:
            return timed_out(context.timeout_seconds, output=text)
        return _outcome(transport.get_returncode(), text)

    def _child_env(self, context: ExecutionContext) -> dict[str, str]:
        env = {name: os.environ[name] for name in self._env_allowlist if name in os.environ}
        task_env: Mapping[str, str] = context.params.get("env") or {}
        env.update(task_env)
        env["SCHEDULER_RUN_ID"] = context.run_id
        env["SCHEDULER_TASK_ID"] = context.task_id
        env["SCHEDULER_ATTEMPT"] = str(context.attempt)
        return env

    async def _terminate_group(self, pgid: int) -> None:
        """SIGTERM the group, give it the grace period, then SIGKILL whatever is left.

        A second cancellation while waiting still ends in SIGKILL (the ``finally``).
        """
        if not _signal_group(pgid, signal.SIGTERM):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._kill_grace_seconds
        try:
            # Polling: grandchildren are not our children, so nothing signals their exit.
            while _group_exists(pgid) and (remaining := deadline - loop.time()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(min(_POLL_SECONDS, remaining))
        finally:
            if _group_exists(pgid):
                _signal_group(pgid, signal.SIGKILL)


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Feeds the output straight into the cap and reports exit and end-of-output separately.

    (``Process.wait()`` of ``create_subprocess_exec`` also waits for the pipes to close, so a
    grandchild holding stdout would hide the program's exit; hence the loop-level API.)
    """

    def __init__(self, output: CappedOutput, loop: asyncio.AbstractEventLoop) -> None:
        self._output = output
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipe_closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self._output.write(data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.pipe_closed.done():
            self.pipe_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _signal_group(pgid: int, signum: signal.Signals) -> bool:
    """Signal every process of the group; ``False`` when the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed its credentials; it exists but is out of reach
        return True
    return True


def _append_lines(text: str | None, lines: list[str]) -> str:
    separator = "" if not text or text.endswith("\n") else "\n"
    return f"{text or ''}{separator}" + "\n".join(lines)


def _outcome(returncode: int | None, output: str | None) -> ExecutionResult:
    if returncode == 0:
        return succeeded({"exit_code": 0}, output=output)
    if returncode is None:
        return failed("the process did not report an exit status", output=output)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return failed(f"killed by signal {name}", output=output, result={"exit_code": returncode})
    return failed(f"exit code {returncode}", output=output, result={"exit_code": returncode})


def _spawn_error(exc: OSError, program: str, cwd: str | None) -> str:
    reason = exc.strerror or str(exc)
    if cwd is not None and exc.filename == cwd:
        return f"cannot use working directory {cwd!r}: {reason}"
    if isinstance(exc, FileNotFoundError):
        return f"program not found: {program!r}"
    if isinstance(exc, PermissionError):
        return f"permission denied: cannot execute {program!r}"
    return f"cannot start {program!r}: {reason}"
