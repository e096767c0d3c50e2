"""``/api/v1/auth``: log in, rotate the refresh token, log out, change one's password, and who
am I."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import JSONBody

from scheduler_api.auth import PUBLIC
from scheduler_api.dependencies import CurrentPrincipal, Options, Services
from scheduler_api.openapi import problems
from scheduler_api.schemas.accounts import (
    LoginIn,
    MeOut,
    PasswordChangeIn,
    RefreshIn,
    TokenOut,
    UserOut,
)
from scheduler_application.errors import AuthenticationFailed, PermissionDenied


class AuthController(Controller):
    path = "/auth"
    tags = ("auth",)

    @post(
        "/login",
        status_code=200,
        summary="Exchange a username and password for tokens",
        description=(
            "Answers 401 with the same body for an unknown user, a wrong password and a "
            "disabled account. Throttled per account and per client address (429)."
        ),
        opt={PUBLIC: True},
        security=[{}],
        responses=problems(401, 429, public=True),
    )
    async def login(
        self,
        data: JSONBody[LoginIn],
        request: Request[Any, Any, Any],
        services: Services,
        options: Options,
    ) -> TokenOut:
        options.throttle.check(data.username, _address(request))
        try:
            pair = await services.auth.login(data.username, data.password)
        except AuthenticationFailed:
            options.throttle.failed(data.username)
            raise
        options.throttle.succeeded(data.username)
        return TokenOut.of(pair)

    @post(
        "/refresh",
        status_code=200,
        summary="Rotate a refresh token",
        description=(
            "Spends the refresh token and returns a new pair. Presenting a spent token again "
            "revokes its whole family (every session descended from that login). Throttled "
            "per client address with log-in (429)."
        ),
        opt={PUBLIC: True},
        security=[{}],
        responses=problems(401, 429, public=True),
    )
    async def refresh(
        self,
        data: JSONBody[RefreshIn],
        request: Request[Any, Any, Any],
        services: Services,
        options: Options,
    ) -> TokenOut:
        options.throttle.check_address(_address(request))
        return TokenOut.of(await services.auth.refresh(data.refresh_token))

    @post(
        "/logout",
        status_code=204,
        summary="End the session: revoke the refresh token's family and the access tokens",
        description=(
            "Revokes the refresh token's family and refuses every access token the user holds "
            "at once (on any device; other devices get a new one with their own refresh token). "
            "Throttled per client address with log-in (429)."
        ),
        opt={PUBLIC: True},
        security=[{}],
        responses=problems(401, 429, public=True),
    )
    async def logout(
        self,
        data: JSONBody[RefreshIn],
        request: Request[Any, Any, Any],
        services: Services,
        options: Options,
    ) -> None:
        options.throttle.check_address(_address(request))
        await services.auth.logout(data.refresh_token)

    @post(
        "/password",
        status_code=200,
        summary="Change your own password",
        description=(
            "Needs the current password (403, field `current_password`, when it is wrong; "
            "throttled like log-in, 429). Ends every session of the account — access and "
            "refresh tokens alike — and returns a new pair for the caller."
        ),
        responses=problems(403, 429),
    )
    async def change_password(
        self,
        data: JSONBody[PasswordChangeIn],
        request: Request[Any, Any, Any],
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
    ) -> TokenOut:
        user = await services.users.me(principal)
        options.throttle.check(user.username, _address(request))
        try:
            pair = await services.auth.change_password(
                principal, data.current_password, data.new_password
            )
        except PermissionDenied:
            options.throttle.failed(user.username)
            raise
        options.throttle.succeeded(user.username)
        return TokenOut.of(pair)

    @get("/me", summary="The caller", responses=problems())
    async def me(self, services: Services, principal: CurrentPrincipal) -> MeOut:
        user = await services.users.me(principal)
        return MeOut(user=UserOut.of(user), role=principal.role, via=principal.via)


def _address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client is not None else "unknown"
