"""Process-wide logging: readable lines on a terminal, one JSON object per line otherwise.

Each line carries the component name; user-supplied text has CR/LF escaped so it cannot forge
log lines.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from scheduler_infrastructure.config import LoggingSettings

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _escape(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class _JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": self._component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _ConsoleFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + component + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _escape(super().format(record)).replace("\\nTraceback", "\nTraceback")


def configure_logging(settings: LoggingSettings, *, component: str) -> None:
    use_json = settings.format == "json" or (
        settings.format == "auto" and not sys.stderr.isatty()
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(component) if use_json else _ConsoleFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("aiormq", "aio_pika", "sqlalchemy.engine", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
