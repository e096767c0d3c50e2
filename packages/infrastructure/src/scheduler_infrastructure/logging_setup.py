"""Process-wide logging: readable lines on a terminal, one JSON object per line otherwise.

Every line carries the component name and, where the work is about a run, its run, task,
worker and trace ids (bound by :mod:`scheduler_application.log_context`). Every line passes the
process's :class:`~scheduler_infrastructure.telemetry.redaction.SecretRedactor`, message,
arguments, extra fields and tracebacks alike. User-supplied text cannot forge a line: JSON
escapes control characters, and the console format escapes CR, LF and the other control
characters (a traceback keeps its own line breaks).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from scheduler_application.log_context import FIELDS, log_fields
from scheduler_application.ports.redaction import NO_REDACTION, Redactor
from scheduler_infrastructure.config import LoggingSettings

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


def _escape(text: str) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class ContextFilter(logging.Filter):
    """Copies the bound log fields (run, task, worker, trace ids) onto each record, unless the
    call passed its own through ``extra``."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in log_fields().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        if not hasattr(record, "trace_id"):
            # Written inside a recorded span (an API request, a run's consume): its trace.
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = f"{context.trace_id:032x}"
        return True


def _redacted(redactor: Redactor, value: Any) -> Any:
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, dict):
        return {k: _redacted(redactor, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(redactor, v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redactor.redact(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str, redactor: Redactor = NO_REDACTION) -> None:
        super().__init__()
        self._component = component
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        redact = self._redactor.redact
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": self._component,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_") and key not in entry:
                entry[key] = _redacted(self._redactor, value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    def __init__(self, component: str, redactor: Redactor = NO_REDACTION) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + component + " %(name)s: %(message)s")
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        exc_info, exc_text, stack = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = exc_info, exc_text, stack
        ids = " ".join(f"{key}={getattr(record, key)}" for key in FIELDS if hasattr(record, key))
        if ids:
            line = f"{line} [{ids}]"
        line = _escape(self._redactor.redact(line))
        if exc_info:
            trace = self._redactor.redact(self.formatException(exc_info))
            # The traceback keeps its line breaks, each line escaped and indented, so no line
            # of it can pass for a log line of its own.
            line += "".join("\n    " + _escape(part) for part in trace.splitlines())
        return line


def configure_logging(
    settings: LoggingSettings, *, component: str, redactor: Redactor = NO_REDACTION
) -> None:
    use_json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    formatter: logging.Formatter = (
        JsonFormatter(component, redactor) if use_json else ConsoleFormatter(component, redactor)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("aiormq", "aio_pika", "sqlalchemy.engine", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
