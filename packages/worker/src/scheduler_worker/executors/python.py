"""The ``python`` executor: calls ``package.module:function`` inside the worker process.

Coroutine functions run on the worker's event loop and are cancelled on timeout. Plain
functions (and the import itself, which may be slow) run in a daemon thread so they never
block the loop. A thread cannot be killed: on timeout the run is reported ``timed_out`` at
once and the thread is left to finish on its own, its result discarded. Daemon threads, not
``asyncio.to_thread``, so that a runaway function neither occupies the loop's default executor
nor keeps the worker from exiting. Whatever the function prints goes to the worker's own
stdout; only an exception's traceback is captured as output.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import json
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import validate_executor
from scheduler_worker.executors.output import DEFAULT_OUTPUT_LIMIT, capped_text
from scheduler_worker.executors.results import (
    describe_exception,
    failed,
    invalid_params,
    succeeded,
    timed_out,
)

T = TypeVar("T")


class PythonExecutor:
    name = "python"

    def __init__(self, *, output_limit: int = DEFAULT_OUTPUT_LIMIT) -> None:
        self._output_limit = output_limit

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        params = context.params
        try:
            validate_executor(self.name, params)
        except ValidationError as exc:
            return invalid_params(exc)
        target: str = params["callable"]
        args = list(params.get("args", []))
        kwargs = dict(params.get("kwargs", {}))
        deadline = asyncio.timeout(context.timeout_seconds)
        try:
            async with deadline:
                function = await _in_daemon_thread(_resolve, target)
                if inspect.iscoroutinefunction(function):
                    value = await function(*args, **kwargs)
                else:
                    value = await _in_daemon_thread(function, *args, **kwargs)
                    if inspect.isawaitable(value):  # e.g. a partial of a coroutine function
                        value = await value
        except _Unresolvable as exc:
            return failed(exc.message, output=self._traceback(exc.__cause__))
        except (Exception, SystemExit) as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                return timed_out(context.timeout_seconds)
            original = exc.original if isinstance(exc, _Escaped) else exc
            return failed(describe_exception(original), output=self._traceback(original))
        return succeeded({"return_value": self._storable(value)})

    def _traceback(self, exc: BaseException | None) -> str | None:
        if exc is None:
            return None
        return capped_text("".join(traceback.format_exception(exc)), self._output_limit)

    def _storable(self, value: Any) -> Any:
        """The value as JSON would give it back; its repr when it has no JSON form; a capped
        string when either is larger than the output limit."""
        try:
            encoded = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return capped_text(_safe_repr(value), self._output_limit)
        if len(encoded) > self._output_limit:
            return capped_text(encoded, self._output_limit)
        return json.loads(encoded)


class _Unresolvable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Escaped(Exception):
    """Carries a ``SystemExit``/``KeyboardInterrupt``/``StopIteration`` out of a thread: set on
    a future as-is, they would stop the event loop or be refused."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _resolve(target: str) -> Callable[..., Any]:
    module_name, _, path = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise _Unresolvable(f"cannot import {module_name!r}: {describe_exception(exc)}") from exc
    for attribute in path.split("."):
        try:
            found = getattr(found, attribute)
        except AttributeError:
            raise _Unresolvable(f"{target!r} not found: no attribute {attribute!r}") from None
    if not callable(found):
        raise _Unresolvable(f"{target!r} is not callable")
    return found  # type: ignore[no-any-return]


def _in_daemon_thread(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: T | BaseException, raised: bool) -> None:
        if future.done():  # cancelled: the run timed out and nobody waits any more
            return
        if raised:
            future.set_exception(outcome)  # type: ignore[arg-type]
        else:
            future.set_result(outcome)  # type: ignore[arg-type]

    def run() -> None:
        outcome: T | BaseException
        try:
            outcome, raised = context.run(function, *args, **kwargs), False
        except Exception as exc:
            outcome, raised = (_Escaped(exc) if isinstance(exc, StopIteration) else exc), True
        except BaseException as exc:
            outcome, raised = _Escaped(exc), True
        with contextlib.suppress(RuntimeError):  # the loop closed while the function ran
            loop.call_soon_threadsafe(settle, outcome, raised)

    threading.Thread(target=run, name=f"python-executor:{function!r:.40}", daemon=True).start()
    return future


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
