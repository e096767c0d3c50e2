"""Secrets out of what a run stores: its output, error and result pass the redactor first."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.ports.redaction import NoRedaction, Redactor


def redact_result(redactor: Redactor, result: ExecutionResult) -> ExecutionResult:
    """``result`` with every string in its output, error and result (keys and values, at any
    depth) redacted; the same object when the redactor does nothing."""
    if isinstance(redactor, NoRedaction):
        return result
    return replace(
        result,
        output=redactor.redact(result.output) if result.output else result.output,
        error=redactor.redact(result.error) if result.error else result.error,
        result=_redact_value(redactor, result.result) if result.result else result.result,
    )


def _redact_value(redactor: Redactor, value: Any) -> Any:
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, dict):
        return {
            _redact_value(redactor, key): _redact_value(redactor, item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(redactor, item) for item in value]
    return value
