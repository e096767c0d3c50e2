"""Secrets out of what a run stores: its output, error and result pass the redactor first.

Beside the process's redactor (configured secrets, credential shapes), a run's own
``secret_env`` values are masked by value (:class:`ValueRedactor`), together with a few
transformations a task might print them in by accident or on purpose: reversed, base64
(standard and URL-safe), hex and URL-encoded, and each line of a multi-line value. Redaction by
value cannot catch every encoding (every other character, ROT13, a hash...): that is why a
secret is handed only to the task's own sandboxed process, never kept in the worker's
environment.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.ports.redaction import NoRedaction, Redactor

SECRET_MARK = "[REDACTED]"  # noqa: S105 - the marker, not a secret
#: Shorter values are not masked by value: they would blank out ordinary words and digits.
MIN_SECRET_LENGTH = 4


def secret_variants(values: Iterable[str]) -> set[str]:
    """The texts to mask for ``values``: each value and its simple transformations."""
    variants: set[str] = set()
    for value in values:
        if len(value) < MIN_SECRET_LENGTH:
            continue
        raw = value.encode()
        encoded = (
            value,
            value[::-1],
            base64.b64encode(raw).decode().rstrip("="),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            raw.hex(),
            raw.hex().upper(),
            quote(value, safe=""),
        )
        variants.update(encoded)
        if "\n" in value:
            variants.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 8)
    return {variant for variant in variants if len(variant) >= MIN_SECRET_LENGTH}


def values_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression for ``values`` (longest first), None when there are none."""
    ordered = sorted(set(values), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


class ValueRedactor:
    """Masks the given secret values (and :func:`secret_variants` of them) wherever they
    appear. Implements :class:`~scheduler_application.ports.redaction.Redactor`."""

    def __init__(self, values: Iterable[str]) -> None:
        self._pattern = values_pattern(secret_variants(values))

    @property
    def hides_nothing(self) -> bool:
        return self._pattern is None

    def redact(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(SECRET_MARK, text)


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


def conceal_secrets(result: ExecutionResult, values: Iterable[str]) -> ExecutionResult:
    """``result`` with a run's own secret values masked (the same object when none)."""
    redactor = ValueRedactor(values)
    if redactor.hides_nothing:
        return result
    return redact_result(redactor, result)


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
