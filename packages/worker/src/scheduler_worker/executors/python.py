"""The ``python`` executor: calls ``package.module:function`` in a sandboxed interpreter of the
worker's pool (:mod:`scheduler_worker.sandbox.pool`), never in the worker process.

The interpreter is a separate, freshly exec'd process with a clean environment (the task's
``env`` and ``secret_env`` plus the allow-list), its own process group, resource limits and —
when the worker runs as root — an unprivileged user; so a task cannot read the worker's
secrets, and ``os._exit``, a segfault or ``MemoryError`` end that run only. Arguments and the
return value travel as JSON; what the function prints (stdout and stderr, logging included) is
the run's output, capped like a shell task's; an exception is a failed run with its traceback
appended to the output. A coroutine function is run with ``asyncio.run``. On timeout or
cancellation the interpreter's whole group is terminated (SIGTERM, ``kill_grace_seconds``,
SIGKILL) and the pool starts another.

Interpreters are reused only by runs of the same task with the same environment: see the pool
for what such runs may see of each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from typing import Any

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import validate_executor
from scheduler_worker.executors.output import DEFAULT_OUTPUT_LIMIT, CappedOutput, capped_text
from scheduler_worker.executors.results import failed, invalid_params, succeeded, timed_out
from scheduler_worker.sandbox.errors import SandboxStartError
from scheduler_worker.sandbox.policy import SandboxPolicy, run_variables, sandbox_policy
from scheduler_worker.sandbox.pool import HostDied, HostGone, PythonHost, PythonPool

#: Interpreters a run is offered to when the ones it reaches turn out dead (``HostGone``).
_DELIVERY_TRIES = 3


class PythonExecutor:
    name = "python"

    def __init__(
        self,
        *,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        sandbox: SandboxPolicy | None = None,
        pool_size: int = 2,
        max_runs_per_process: int = 100,
        kill_grace_seconds: float = 5.0,
    ) -> None:
        self._output_limit = output_limit
        self._policy = sandbox or sandbox_policy()
        self._pool = PythonPool(
            policy=self._policy,
            size=pool_size,
            max_runs=max_runs_per_process,
            output_limit=output_limit,
            kill_grace_seconds=kill_grace_seconds,
        )

    @property
    def pool(self) -> PythonPool:
        return self._pool

    async def warm_up(self) -> None:
        """Start the pool's interpreters (otherwise the first run does)."""
        await self._pool.start()

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        params = context.params
        try:
            validate_executor(self.name, params)
        except ValidationError as exc:
            return invalid_params(exc)
        limits = self._policy.limits.lowered(params.get("limits"))
        env: dict[str, str] = dict(params.get("env") or {})
        env.update(context.secret_env)
        spec_limits = limits.as_spec()
        cpu_seconds = spec_limits.pop("cpu", 0)
        request = {
            "op": "run",
            "callable": params["callable"],
            "args": list(params.get("args", [])),
            "kwargs": dict(params.get("kwargs", {})),
            "env": env,
            "run_env": run_variables(
                run_id=context.run_id, task_id=context.task_id, attempt=context.attempt
            ),
            "limits": spec_limits,
            "cpu_seconds": cpu_seconds,
        }
        key = _key(context.task_id, env, spec_limits)
        output = CappedOutput(self._output_limit, tee=context.on_output)
        for tries_left in range(_DELIVERY_TRIES - 1, -1, -1):
            try:
                host = await self._pool.acquire(key)
            except SandboxStartError as exc:
                return failed(str(exc))
            reusable = False
            deadline = asyncio.timeout(context.timeout_seconds)
            try:
                async with deadline:
                    reply = await host.run(request, output.write)
                reusable = not reply.get("dirty", True)
            except HostGone as exc:
                # An idle interpreter that died before the pool heard of it (killed, say): the
                # run never reached it, so another interpreter takes it.
                if tries_left:
                    continue
                return failed(_death(host, exc), output=output.text())
            except HostDied as exc:
                return failed(_death(host, exc), output=output.text())
            except TimeoutError:
                if not deadline.expired():
                    raise
                return timed_out(context.timeout_seconds, output=output.text())
            finally:
                await asyncio.shield(self._pool.release(host, reusable=reusable))
            break
        try:
            return self._result(reply, output)
        except (TypeError, ValueError, AttributeError):  # the task wrote on the channel itself
            return failed("the python process sent a malformed reply", output=output.text())

    def _result(self, reply: dict[str, Any], output: CappedOutput) -> ExecutionResult:
        outcome = reply.get("outcome")
        if outcome == "returned":
            if "json" in reply:
                value: Any = json.loads(reply["json"])
            else:
                value = _cut_text(reply)
            return succeeded({"return_value": value}, output=output.text())
        text = output.text()
        trace = reply.get("traceback")
        if trace:
            printed_then_trace = _joined(text, _cut_text(trace)) if text else _cut_text(trace)
            text = capped_text(printed_then_trace, self._output_limit)
        return failed(str(reply.get("error")), output=text)


def _key(task_id: str, env: dict[str, str], limits: dict[str, int]) -> str:
    """What an interpreter is bound to; hashed so the pool holds no secret in its keys."""
    material = json.dumps([task_id, env, limits], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def _death(host: PythonHost, exc: HostDied) -> str:
    code = exc.returncode
    if code is None:
        return "the python process ended unexpectedly"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the python process was killed by signal {name}"
    return f"the python process exited with code {code}"


def _cut_text(part: dict[str, Any]) -> str:
    text = str(part.get("text", ""))
    dropped = int(part.get("dropped", 0))
    return f"{text}\n[output truncated: {dropped} bytes dropped]" if dropped else text


def _joined(first: str, second: str) -> str:
    return first + ("" if first.endswith("\n") else "\n") + second
