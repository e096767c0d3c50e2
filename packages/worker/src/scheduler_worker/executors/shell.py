"""The ``shell`` executor: a program run from an argument list, never through a shell unless
the task asks for one with ``shell: true``.

Every run is a sandboxed process (:mod:`scheduler_worker.sandbox`): started fresh by a small
supervisor (spawned and exec'd, never a fork of the worker), with a clean environment (see
:mod:`scheduler_worker.sandbox.policy`), no inherited descriptors, its own process group, its
resource limits and — when the worker runs as root — a uid of its own (or the shared
unprivileged account) with a private ``HOME``/``TMPDIR``, and no network unless
``worker.task_network`` is ``host``. Without ``cwd`` it runs in ``/``.

A timeout or a cancellation signals the task's whole process group — SIGTERM,
``kill_grace_seconds``, then SIGKILL — so grandchildren die with the program. Processes the
program leaves behind when it exits are terminated the same way: a run owns its process group.
When the run is over, or if the worker dies (even by ``kill -9``), the supervisor SIGKILLs
whatever is left of the group, and with a uid of the run's own every process of that uid (also
those that left the group with ``setsid``). POSIX (Linux) only.
"""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import Sequence
from dataclasses import replace

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import validate_executor
from scheduler_worker.executors.output import DEFAULT_OUTPUT_LIMIT, CappedOutput
from scheduler_worker.executors.results import failed, invalid_params, succeeded, timed_out
from scheduler_worker.sandbox.errors import SandboxStartError
from scheduler_worker.sandbox.policy import (
    DEFAULT_ENV_ALLOWLIST,
    SandboxPolicy,
    TaskIdentity,
    sandbox_policy,
)
from scheduler_worker.sandbox.process import SandboxProcess, TaskSpec

__all__ = ["DEFAULT_ENV_ALLOWLIST", "ShellExecutor"]

_SHELL = "/bin/sh"
#: The working directory of a task that names none: readable by any user.
DEFAULT_CWD = "/"
#: After the group is gone: how long to wait for the exit status and for the pipe to close
#: (a process that left the group with setsid may still hold it; it is not waited for).
_REAP_SECONDS = 5.0
_DRAIN_SECONDS = 2.0


class ShellExecutor:
    name = "shell"

    def __init__(
        self,
        *,
        env_allowlist: Sequence[str] | None = None,
        sandbox: SandboxPolicy | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        kill_grace_seconds: float = 5.0,
    ) -> None:
        """``sandbox``: who tasks run as and their limits (default: :func:`sandbox_policy`
        for this process); ``env_allowlist`` overrides its allow-list."""
        policy = sandbox or sandbox_policy()
        if env_allowlist is not None:
            policy = _with_allowlist(policy, env_allowlist)
        self._policy = policy
        self._output_limit = output_limit
        self._kill_grace_seconds = kill_grace_seconds

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        params = context.params
        try:
            validate_executor(self.name, params)
        except ValidationError as exc:
            return invalid_params(exc)
        argv = [_SHELL, "-c", params["command"]] if params.get("shell") else list(params["argv"])
        cwd: str = params.get("cwd") or DEFAULT_CWD
        # A task may lower the cap, not raise it past what the worker is willing to hold.
        requested = params.get("output_limit")
        output = CappedOutput(
            self._output_limit if requested is None else min(requested, self._output_limit),
            tee=context.on_output,
        )
        try:
            identity = self._policy.identity()
        except SandboxStartError as exc:
            return failed(str(exc))
        try:
            return await self._run(context, identity, argv, cwd, output)
        finally:
            await asyncio.shield(asyncio.to_thread(identity.close))

    async def _run(
        self,
        context: ExecutionContext,
        identity: TaskIdentity,
        argv: list[str],
        cwd: str,
        output: CappedOutput,
    ) -> ExecutionResult:
        params = context.params
        spec = TaskSpec(
            argv=argv,
            env=self._policy.environment(
                run_id=context.run_id,
                task_id=context.task_id,
                attempt=context.attempt,
                env=params.get("env"),
                secret_env=context.secret_env,
                user=identity.user,
            ),
            cwd=cwd,
            user=identity.user,
            limits=self._policy.limits.lowered(params.get("limits")),
            hold_fds=identity.hold_fds,
            network=self._policy.network,
        )
        try:
            process = await SandboxProcess.start(spec, on_output=output.write)
        except SandboxStartError as exc:
            return failed(str(exc))
        notes: list[str] = []
        try:
            await asyncio.wait([process.exited], timeout=context.timeout_seconds)
            expired = not process.exited.done()
            if expired:
                await process.terminate(self._kill_grace_seconds)
            elif process.group_exists():
                notes.append("[processes left running by the task were terminated]")
                await process.terminate(self._kill_grace_seconds)
            await asyncio.wait([process.exited], timeout=_REAP_SECONDS)
            await asyncio.wait([process.output_closed], timeout=_DRAIN_SECONDS)
        except asyncio.CancelledError:
            await process.terminate(self._kill_grace_seconds)
            raise
        finally:
            await asyncio.shield(process.close())
        if process.failure is not None:
            return failed(_spawn_error(process.failure, argv[0], cwd))
        text = output.text()
        if notes:
            text = _append_lines(text, notes)
        if expired:
            return timed_out(context.timeout_seconds, output=text)
        return _outcome(process.exited.result() if process.exited.done() else None, text)


def _with_allowlist(policy: SandboxPolicy, allowlist: Sequence[str]) -> SandboxPolicy:
    return replace(policy, env_allowlist=tuple(allowlist))


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


def _spawn_error(failure: dict[str, object], program: str, cwd: str) -> str:
    reason = str(failure.get("message") or "unknown error")
    errno_value = failure.get("errno")
    if failure.get("stage") == "cwd":
        return f"cannot use working directory {cwd!r}: {reason}"
    if failure.get("stage") != "exec":
        return f"cannot start {program!r}: {reason}"
    if errno_value == errno.ENOENT:
        return f"program not found: {program!r}"
    if errno_value == errno.EACCES:
        return f"permission denied: cannot execute {program!r}"
    return f"cannot start {program!r}: {reason}"
