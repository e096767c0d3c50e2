"""Every request is authenticated before routing reaches a handler, unless the handler is
marked public (``opt={"public": True}``): forgetting to protect an endpoint fails closed."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp

from scheduler_application.auth import MISSING_CREDENTIALS, AuthService
from scheduler_application.auth_context import Principal
from scheduler_application.errors import AuthenticationFailed

#: The route option that exempts a handler from authentication.
PUBLIC = "public"
#: The OpenAPI document and its viewers are public.
OPENAPI_PATTERN = "^/schema"


class PrincipalMiddleware(AbstractAuthenticationMiddleware):
    def __init__(self, app: ASGIApp, *, auth: AuthService) -> None:
        super().__init__(
            app, exclude=[OPENAPI_PATTERN], exclude_from_auth_key=PUBLIC, scopes={ScopeType.HTTP}
        )
        self._auth = auth

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        principal = await self._auth.authenticate(
            authorization=connection.headers.get("authorization"),
            api_key=connection.headers.get("x-api-key"),
        )
        return AuthenticationResult(user=principal, auth=principal.via)


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The dependency handlers declare as ``principal: Principal``."""
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        raise AuthenticationFailed(MISSING_CREDENTIALS)
    return user
