"""An executor whose outcome the test decides, recording every context it was handed."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_domain.accounts import Role
from scheduler_domain.executor_policy import PLUGINS, ExecutorPolicy

Outcome = (
    ExecutionResult
    | Callable[[ExecutionContext], ExecutionResult]
    | Callable[[ExecutionContext], Awaitable[ExecutionResult]]
)


class FakeExecutor:
    def __init__(self, name: str = "noop", result: Outcome | None = None) -> None:
        self.name = name
        self._result: Outcome = (
            result if result is not None else ExecutionResult(status="succeeded")
        )
        self.contexts: list[ExecutionContext] = []

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        self.contexts.append(context)
        if isinstance(self._result, ExecutionResult):
            return self._result
        outcome = self._result(context)
        if inspect.isawaitable(outcome):
            return await outcome
        return outcome


#: For tests of everything but the executor policy: every role may use every executor, and any
#: python callable outside the forbidden modules may run (a single trusted team's install).
OPEN_EXECUTOR_POLICY = ExecutorPolicy.from_names(
    {name: [role.value for role in Role] for name in ("noop", "http", "shell", "python", PLUGINS)},
    python_allow=("*:*",),
)
