from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionContext:
    run_id: str
    task_id: str
    attempt: int
    params: dict[str, Any]
    timeout_seconds: float | None = None
    #: The task's decrypted ``secret_env``: set in the task process's environment beside
    #: ``params["env"]``, never logged, redacted by value from what the run reports.
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    #: Hears the output an executor captures while the run goes on (the bytes it keeps, in
    #: order), for the run's page to follow it live; None when nobody listens.
    on_output: Callable[[bytes], None] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionResult:
    status: Literal["succeeded", "failed", "timed_out"]
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    output: str | None = None


class Executor(Protocol):
    """Runs one attempt. Implementations enforce ``timeout_seconds`` themselves (killing the
    process group, cancelling the coroutine) and turn task failures into a ``failed`` result;
    an exception escaping ``execute`` is a bug in the executor, reported as a failure."""

    name: str

    async def execute(self, context: ExecutionContext) -> ExecutionResult: ...
