"""Encryption at rest of the values of tasks' ``secret_env``.

A :class:`SecretBox` seals a value before it is stored and opens it again when a worker claims
a run of the task. Only the names of a task's secrets are ever shown; the sealed values never
leave the server except, opened, to the worker that runs the task.
"""

from __future__ import annotations

from typing import Protocol


class SecretBox(Protocol):
    """``seal(plaintext)`` gives an ASCII token that reveals nothing of ``plaintext`` but its
    rough length, and differs on every call. ``open(token)`` gives the plaintext back, or
    raises :class:`~scheduler_application.errors.SecretUnreadable` when no key it holds opens
    the token (another key, a key rotated away, a tampered token). Both are synchronous and
    fast: microseconds per value."""

    def seal(self, plaintext: str) -> str: ...

    def open(self, sealed: str) -> str: ...
