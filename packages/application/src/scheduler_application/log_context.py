"""Who a log line is about: the run, task, worker and trace the current work concerns.

Whoever starts work on a run binds these (the worker around an execution, the dispatcher per
run it acts on); the logging setup adds them to every line written meanwhile. They live in a
context variable, which follows asyncio tasks: concurrent runs never see each other's fields,
and a task started while they are bound inherits them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType

FIELDS = ("run_id", "task_id", "worker_id", "trace_id")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_fields: ContextVar[Mapping[str, str]] = ContextVar("scheduler_log_fields", default=_EMPTY)


def log_fields() -> Mapping[str, str]:
    """The fields bound now (read-only)."""
    return _fields.get()


def bind(**fields: str | None) -> Token[Mapping[str, str]]:
    """Add fields (None values are ignored) until the returned token is reset, or for the rest
    of the current asyncio task."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log fields: {', '.join(sorted(unknown))}")
    merged = {**_fields.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _fields.set(MappingProxyType(merged))


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        _fields.reset(token)


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``), or None."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1]
