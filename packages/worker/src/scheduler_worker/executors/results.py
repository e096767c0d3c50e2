"""Constructors for the outcomes every executor reports, so their wording stays uniform."""

from __future__ import annotations

from typing import Any

from scheduler_application.ports.executor import ExecutionResult
from scheduler_domain.errors import ValidationError


def succeeded(result: dict[str, Any], *, output: str | None = None) -> ExecutionResult:
    return ExecutionResult(status="succeeded", result=result, output=output)


def failed(
    error: str, *, output: str | None = None, result: dict[str, Any] | None = None
) -> ExecutionResult:
    return ExecutionResult(status="failed", error=error, output=output, result=result or {})


def timed_out(timeout_seconds: float | None, *, output: str | None = None) -> ExecutionResult:
    error = "timed out" if timeout_seconds is None else f"timed out after {timeout_seconds:g} s"
    return ExecutionResult(status="timed_out", error=error, output=output)


def invalid_params(error: ValidationError) -> ExecutionResult:
    """Parameters are validated when a task is created; this catches rows that predate a rule."""
    where = f" ({error.field})" if error.field else ""
    return failed(f"invalid parameters{where}: {error.message}")


def describe_exception(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
