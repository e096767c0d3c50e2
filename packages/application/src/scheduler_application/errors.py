"""The application's exceptions. Adapters (the API, the CLI) map these to their own answers."""

from __future__ import annotations


class ApplicationError(Exception):
    """Root of the errors the use cases raise on purpose."""

    code = "application_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ApplicationError):
    """The object does not exist, or the caller may not know that it does (answered alike)."""

    code = "not_found"


class AlreadyExists(ApplicationError):
    code = "already_exists"


class Conflict(ApplicationError):
    """The object changed under us (optimistic version check failed) or is in the wrong state."""

    code = "conflict"


class Contended(Conflict):
    """The write lost a race with another transaction (PostgreSQL broke a deadlock, or a
    serialization failure): nothing of it was written, and the same write may succeed when
    tried again — unlike a plain :class:`Conflict`, which is an answer."""


class PermissionDenied(ApplicationError):
    code = "permission_denied"


class AuthenticationFailed(ApplicationError):
    code = "authentication_failed"


class Unavailable(ApplicationError):
    """A backing service cannot be reached right now. ``dependency`` says which, by role:
    ``database``, ``broker`` (whatever carries the run queue) or ``redis`` (rate limits)."""

    code = "unavailable"

    def __init__(
        self, message: str, *, field: str | None = None, dependency: str = "unknown"
    ) -> None:
        super().__init__(message, field=field)
        self.dependency = dependency


class SecretUnreadable(ApplicationError):
    """A sealed secret that the configured key(s) cannot open."""

    code = "secret_unreadable"
