"""The executors' exceptions: one root, narrow subclasses."""

from __future__ import annotations

from collections.abc import Iterable


class ExecutorError(Exception):
    """Root of the errors raised by the executor machinery (not by tasks: those are results)."""


class UnknownExecutorError(ExecutorError, LookupError):
    """No executor is registered under the requested name."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown executor {name!r}; this worker has {', '.join(self.known) or 'none'}"
            " (third-party executors are installed as 'scheduler.executors' entry points)"
        )


class DuplicateExecutorError(ExecutorError):
    """Two executors claim the same name."""
