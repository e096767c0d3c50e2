"""What can go wrong in an admin command, as one root exception with narrow subclasses.

The root command prints any of them as one ``error: …`` line on stderr and exits with its
``exit_code``; nothing else in the CLI decides how a failure looks.
"""

from __future__ import annotations

#: Exit code of a command that failed (an API error, an unreachable server, bad input).
FAILURE = 1


class CliError(Exception):
    """An expected failure, shown to people as ``error: <message>`` and, to a command run with
    ``--json``, as one JSON object (:meth:`problem`)."""

    exit_code = FAILURE
    #: ``code`` of the JSON form when the API gave none.
    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def problem(self) -> dict[str, object]:
        """``{"status", "code", "field", "detail"}``: ``status`` is the HTTP status, None when
        the failure happened before or without an answer."""
        return {"status": None, "code": self.kind, "field": None, "detail": self.message}


class Unreachable(CliError):
    """No HTTP answer at all: refused, timed out, unknown host, TLS failure."""

    kind = "unreachable"


class NotLoggedIn(CliError):
    """No credentials for this server, or they expired and could not be refreshed."""

    kind = "not-logged-in"


class BadInput(CliError):
    """The command line or an input file cannot be turned into a request."""

    kind = "bad-input"


class ApiError(CliError):
    """The API answered with an RFC 9457 problem (or some other error status)."""

    kind = "api-error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        field: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        #: The server's own words, without the ``field:`` prefix of ``message``.
        self.detail = detail if detail is not None else message

    def problem(self) -> dict[str, object]:
        return {
            "status": self.status,
            "code": self.code or self.kind,
            "field": self.field,
            "detail": self.detail,
        }

    @property
    def not_found(self) -> bool:
        return self.status == 404
