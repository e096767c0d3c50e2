"""Keeping secrets out of what the scheduler stores and logs.

A :class:`Redactor` replaces secrets in text with a marker: the values it was configured with
(the JWT secret, passwords, secret-looking environment variables) and text that looks like a
credential whatever its value (``Bearer …`` tokens, API keys, JWTs, ``password=…``). It is
applied to a run's output, error and result before they are stored, and to every log line.
``redact`` must be pure, fast on tens of kilobytes, and return the text unchanged when it
holds nothing to hide.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from typing import Protocol


class Redactor(Protocol):
    def redact(self, text: str) -> str: ...


class SecretScope(Protocol):
    """The values of a run's ``secret_env`` made known to the process's redactor (logs, spans,
    stored output) for as long as the run is executed here: ``with scope.hide(values): …``.
    Values are forgotten on exit (and kept only once however many runs share them), so the
    memory held is bounded by the runs in progress."""

    def hide(self, values: Collection[str]) -> contextlib.AbstractContextManager[None]: ...


class NoRedaction:
    """Leaves text as it is (the default where nothing was configured)."""

    def redact(self, text: str) -> str:
        return text


NO_REDACTION: Redactor = NoRedaction()


class NoSecretScope:
    """Hides nothing more (the default where no process redactor is wired)."""

    @contextlib.contextmanager
    def hide(self, values: Collection[str]) -> Iterator[None]:
        yield


NO_SECRET_SCOPE: SecretScope = NoSecretScope()
