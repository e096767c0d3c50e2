"""The one place where errors become HTTP answers: RFC 9457 ``application/problem+json``.

Application and domain errors carry no HTTP status; this map gives them one. Litestar's own
errors (validation, routing, body size) are rewritten in the same shape. Anything else is a bug:
it is logged with its traceback under an incident id and answered with a generic 500 that
reveals nothing but that id.
"""

from __future__ import annotations

import logging
import re
import uuid
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from scheduler_api.auth.middleware import quota_headers
from scheduler_api.schemas.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, Problem
from scheduler_api.throttle import Throttled
from scheduler_application.accounts.request_limits import RequestsThrottled
from scheduler_application.errors import (
    AlreadyExists,
    ApplicationError,
    AuthenticationFailed,
    Conflict,
    Contended,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from scheduler_domain.errors import (
    DomainError,
    IllegalTransition,
    LeaseLost,
    StaleFencingToken,
)

logger = logging.getLogger("scheduler.api.errors")
#: The app state key of the RunObserver told of outages (answered 503).
OBSERVER_STATE = "run_observer"

#: Application errors by the status they mean (first match wins, so subclasses come first).
_APPLICATION_STATUS: tuple[tuple[type[ApplicationError], int], ...] = (
    (NotFound, 404),
    (AlreadyExists, 409),
    (Conflict, 409),
    (PermissionDenied, 403),
    (AuthenticationFailed, 401),
    (Unavailable, 503),
)
_DOMAIN_CONFLICTS = (IllegalTransition, LeaseLost, StaleFencingToken)
_HTTP_CODES = {
    400: "malformed-request",
    401: "authentication-failed",
    403: "permission-denied",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}
_BACKTICKED = re.compile(r"`([^`]+)`")
_PATH = re.compile(r"at `\$\.?([^`]*)`")


class MalformedBody(Exception):
    """The body cannot be JSON this API reads (not UTF-8, nested too deeply)."""


class HeartbeatConflict(Exception):
    """Some leases a worker heartbeated for are gone; ``stop`` lists those runs."""

    def __init__(self, stop: list[str]) -> None:
        super().__init__(
            f"the lease of {len(stop)} run(s) is gone (cancelled, reaped or claimed again); "
            "stop them. The other runs' leases were renewed."
        )
        self.stop = stop


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    stop: list[str] | None = None,
) -> Response[Problem]:
    body = Problem(
        type=PROBLEM_BASE + code,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code,
        field=field,
        instance=instance,
        stop=stop,
    )
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """Translate any exception escaping a handler, a guard or the authentication middleware."""
    if isinstance(exc, Throttled):
        return problem(
            429,
            "too-many-requests",
            str(exc),
            field="username" if exc.scope == "account" else None,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, RequestsThrottled):
        headers = {name.decode(): value.decode() for name, value in quota_headers(exc.quota)}
        headers["Retry-After"] = str(exc.quota.retry_after)
        return problem(429, "too-many-requests", str(exc), headers=headers)
    if isinstance(exc, MalformedBody):
        return problem(400, "malformed-request", str(exc), field="body")
    if isinstance(exc, HeartbeatConflict):
        return problem(409, "lease-lost", str(exc), field="runs", stop=exc.stop)
    if isinstance(exc, ApplicationError):
        if isinstance(exc, Unavailable):
            observer = request.app.state.get(OBSERVER_STATE)
            if observer is not None:
                observer.dependency_unavailable(exc.dependency)
        return _application(exc)
    if isinstance(exc, DomainError):
        return _domain(exc)
    if isinstance(exc, ValidationException):
        return _validation(exc)
    if isinstance(exc, OverflowError):
        # Client values beyond what datetime/timedelta can hold (year 10000, an offset pushing
        # year 1 below the minimum) overflow deep in parsing: bad input, not a server fault.
        logger.warning(
            "input out of range on %s %s", request.method, request.url.path, exc_info=exc
        )
        return problem(422, "value-out-of-range", "a value in the request is out of range")
    if isinstance(exc, HTTPException):
        return _http(request, exc)
    return _unexpected(request, exc)


def _application(exc: ApplicationError) -> Response[Problem]:
    status = next((s for kind, s in _APPLICATION_STATUS if isinstance(exc, kind)), 400)
    code = exc.code.replace("_", "-")
    headers: dict[str, str] | None = None
    detail = exc.message
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="scheduler"'}
    elif status == 503:
        logger.warning("dependency unavailable: %s", exc.message)
        headers = {"Retry-After": "5"}
        detail = "a service the scheduler depends on is unavailable; try again shortly"
    elif isinstance(exc, Contended):
        # A lost race (a deadlock broken), nothing written: the same request may succeed.
        headers = {"Retry-After": "1"}
    return problem(status, code, detail, field=exc.field, headers=headers)


def _domain(exc: DomainError) -> Response[Problem]:
    status = 409 if isinstance(exc, _DOMAIN_CONFLICTS) else 422
    return problem(status, exc.code.replace("_", "-"), exc.message, field=exc.field)


def _validation(exc: ValidationException) -> Response[Problem]:
    """Litestar could not turn the request into the handler's arguments: name the field."""
    errors = exc.extra if isinstance(exc.extra, list) else []
    first: dict[str, Any] = errors[0] if errors and isinstance(errors[0], dict) else {}
    message = str(first.get("message") or exc.detail or "the request is not valid")
    key = first.get("key")
    field: str | None = str(key) if key is not None else None
    path = _PATH.search(message)
    if path is not None and path.group(1):
        field = path.group(1)
    elif first.get("source") == "body" and field in (None, "data"):
        named = _BACKTICKED.search(message) if "field" in message else None
        field = named.group(1) if named is not None else "body"
    return problem(422, "validation-error", message, field=field)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    code = _HTTP_CODES.get(status, "http-error")
    detail = str(exc.detail or HTTPStatus(status).phrase)
    field: str | None = None
    if status == 400:  # the framework could not read the body (not JSON, truncated...)
        field = "body"
    elif status == 404:
        detail = f"no resource at {request.url.path}"
    elif status == 413:
        detail = "the request body is larger than this server accepts"
    headers = {k: str(v) for k, v in (exc.headers or {}).items()} or None
    if status >= 500:
        return _unexpected(request, exc)
    return problem(status, code, detail, field=field, headers=headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    incident = str(uuid.uuid4())
    logger.error(
        "unhandled %s on %s %s (incident %s)",
        type(exc).__name__,
        request.method,
        request.url.path,
        incident,
        exc_info=exc,
    )
    return problem(
        500,
        "internal-error",
        "an unexpected error occurred; it has been logged",
        instance=f"urn:uuid:{incident}",
    )
