"""Every request is authenticated before routing reaches a handler, unless the handler is
marked public (``opt={"public": True}``): forgetting to protect an endpoint fails closed.

Then the principal's request rate limit is applied (when one is configured for its role): a
refused request answers 429 before any handler runs, and every limited answer carries the
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` fields."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_api.auth.guards import refuse_worker_role
from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.auth import MISSING_CREDENTIALS, AuthService
from scheduler_application.accounts.request_limits import (
    RequestLimits,
    RequestQuota,
    RequestsThrottled,
)
from scheduler_application.errors import AuthenticationFailed

#: The route option that exempts a handler from authentication.
PUBLIC = "public"
#: Where the request's quota waits for the response (its ``RateLimit-*`` fields).
QUOTA_SCOPE_KEY = "scheduler.quota"
#: The OpenAPI document and its viewers are public.
OPENAPI_PATTERN = "^/schema"


class PrincipalMiddleware(AbstractAuthenticationMiddleware):
    def __init__(
        self, app: ASGIApp, *, auth: AuthService, limits: RequestLimits | None = None
    ) -> None:
        super().__init__(
            app, exclude=[OPENAPI_PATTERN], exclude_from_auth_key=PUBLIC, scopes={ScopeType.HTTP}
        )
        self._auth = auth
        self._limits = limits if limits is not None and limits.active else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._limits is None:
            await super().__call__(scope, receive, send)
            return

        async def send_with_quota(message: Message) -> None:
            quota = scope.get(QUOTA_SCOPE_KEY)
            if message["type"] == "http.response.start" and isinstance(quota, RequestQuota):
                message["headers"] = [*message.get("headers", ()), *quota_headers(quota)]
            await send(message)

        await super().__call__(scope, receive, send_with_quota)

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        authorization, api_key = _credentials(connection.scope)
        principal = await self._auth.authenticate(authorization=authorization, api_key=api_key)
        if self._limits is not None:
            quota = await self._limits.check(principal)
            if quota is not None:
                if not quota.allowed:
                    raise RequestsThrottled(quota)
                connection.scope[QUOTA_SCOPE_KEY] = quota  # type: ignore[literal-required]
        refuse_worker_role(principal, connection.route_handler.opt)
        return AuthenticationResult(user=principal, auth=principal.via)


def _credentials(scope: Scope) -> tuple[str | None, str | None]:
    """The first ``Authorization`` and ``X-API-Key`` values, read off the scope's raw headers
    (names arrive lower-cased) as the framework's ``Headers`` would read them, without building
    one on every request."""
    authorization: str | None = None
    api_key: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    return authorization, api_key


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The dependency handlers declare as ``principal: Principal``."""
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        raise AuthenticationFailed(MISSING_CREDENTIALS)
    return user


def quota_headers(quota: RequestQuota) -> list[tuple[bytes, bytes]]:
    """The ``RateLimit-*`` fields (draft-ietf-httpapi-ratelimit-headers, the separate-fields
    form) of ``quota``."""
    return [
        (b"ratelimit-limit", str(quota.limit).encode()),
        (b"ratelimit-remaining", str(quota.remaining).encode()),
        (b"ratelimit-reset", str(quota.reset).encode()),
    ]
