"""Keeping secrets out of what the scheduler stores and logs.

A :class:`Redactor` replaces secrets in text with a marker: the values it was configured with
(the JWT secret, passwords, secret-looking environment variables) and text that looks like a
credential whatever its value (``Bearer …`` tokens, API keys, JWTs, ``password=…``). It is
applied to a run's output, error and result before they are stored, and to every log line.
``redact`` must be pure, fast on tens of kilobytes, and return the text unchanged when it
holds nothing to hide.
"""

from __future__ import annotations

from typing import Protocol


class Redactor(Protocol):
    def redact(self, text: str) -> str: ...


class NoRedaction:
    """Leaves text as it is (the default where nothing was configured)."""

    def redact(self, text: str) -> str:
        return text


NO_REDACTION: Redactor = NoRedaction()
