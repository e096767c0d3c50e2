"""What a worker reports, made fit to store: an outcome's output and error text are cut to a
byte budget, with a marker saying how much was dropped (the in-process executors mark their
captured output the same way), so a worker cannot fill the database with one outcome; and any
text of an outcome is made storable whatever bytes a task printed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from scheduler_application.ports.executor import ExecutionResult

#: The default budget of a run's output, as ``worker.output_limit_bytes``.
DEFAULT_OUTPUT_LIMIT = 65_536
#: An error is a message, not a log: a few kilobytes say what went wrong.
DEFAULT_ERROR_LIMIT = 4_096


def cap_text(text: str | None, limit: int, *, what: str = "output") -> str | None:
    """``text`` cut to at most ``limit`` UTF-8 bytes, then ``[<what> truncated: N bytes
    dropped]``; a character the cut would split is dropped whole. None stays None."""
    if text is None:
        return None
    encoded = text.encode("utf-8", "replace")
    limit = max(0, limit)
    if len(encoded) <= limit:
        return text
    kept = encoded[:limit].decode("utf-8", "ignore")
    dropped = len(encoded) - len(kept.encode("utf-8"))
    return f"{kept}\n[{what} truncated: {dropped} bytes dropped]"


def storable_result(result: ExecutionResult) -> ExecutionResult:
    """``result`` as a database can hold it: NUL characters (which PostgreSQL's text and JSONB
    refuse) become U+FFFD, and lone surrogates (undecodable bytes a task's output may carry)
    become ``?``. Whatever a task prints, its outcome can be recorded."""
    return replace(
        result,
        output=_storable(result.output) if result.output else result.output,
        error=_storable(result.error) if result.error else result.error,
        result=_storable_value(result.result) if result.result else result.result,
    )


def _storable(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _storable_value(value: Any) -> Any:
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, dict):
        return {_storable_value(key): _storable_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable_value(item) for item in value]
    return value
