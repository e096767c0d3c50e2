"""Root of the infrastructure's own errors (driver errors are translated to application errors)."""

from __future__ import annotations


class InfrastructureError(Exception):
    """Root of errors raised by adapters about themselves (not translated driver failures)."""


class ConfigError(InfrastructureError):
    """Invalid configuration. ``str()`` is one line naming the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"invalid configuration: {key}: {problem}")
