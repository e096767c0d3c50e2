"""What can go wrong in an admin command, as one root exception with narrow subclasses.

The root command prints any of them as one ``error: …`` line on stderr and exits with its
``exit_code``; nothing else in the CLI decides how a failure looks.
"""

from __future__ import annotations

#: Exit code of a command that failed (an API error, an unreachable server, bad input).
FAILURE = 1


class CliError(Exception):
    """An expected failure, shown to people as ``error: <message>``."""

    exit_code = FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(CliError):
    """No HTTP answer at all: refused, timed out, unknown host, TLS failure."""


class NotLoggedIn(CliError):
    """No credentials for this server, or they expired and could not be refreshed."""


class BadInput(CliError):
    """The command line or an input file cannot be turned into a request."""


class ApiError(CliError):
    """The API answered with an RFC 9457 problem (or some other error status)."""

    def __init__(
        self, message: str, *, status: int, code: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field

    @property
    def not_found(self) -> bool:
        return self.status == 404
