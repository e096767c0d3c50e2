"""``/api/v1/users``: user administration, for admins."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Options, Services
from scheduler_api.openapi import problems
from scheduler_api.params import (
    LIMIT_DESCRIPTION,
    Cursor,
    object_id,
    open_cursor,
    page_size,
    seal_cursor,
)
from scheduler_api.schemas.accounts import (
    PasswordResetIn,
    UserCreateIn,
    UserOut,
    UserPage,
    UserUpdateIn,
)

UserId = Annotated[str, PathParameter(description="User id", max_length=64)]


def _id(user_id: str) -> str:
    return object_id(user_id, kind="user", field="user_id")


class UserController(Controller):
    path = "/users"
    tags = ("users",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post("/", summary="Create a user", responses=problems(409))
    async def create(
        self, data: JSONBody[UserCreateIn], services: Services, principal: CurrentPrincipal
    ) -> Response[UserOut]:
        user = await services.users.create(
            data.username, data.password, data.role, principal=principal
        )
        return Response(
            UserOut.of(user), status_code=201, headers={"Location": f"/api/v1/users/{user.id}"}
        )

    @get("/", summary="List users", responses=problems())
    async def list_users(
        self,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 50,
        cursor: Cursor = None,
    ) -> UserPage:
        size = page_size(limit, options)
        page = await services.users.list(
            principal=principal, limit=size, cursor=open_cursor(cursor, options)
        )
        return UserPage(
            items=[UserOut.of(u) for u in page.items],
            next_cursor=seal_cursor(page.next_cursor, options),
            limit=size,
        )

    @get("/{user_id:str}", summary="Get a user", responses=problems(404))
    async def get_user(
        self, user_id: UserId, services: Services, principal: CurrentPrincipal
    ) -> UserOut:
        return UserOut.of(await services.users.get(_id(user_id), principal=principal))

    @patch(
        "/{user_id:str}",
        summary="Change a user's role or disabled flag",
        description=(
            "Disabling a user refuses their tokens and keys at once and ends their sessions; "
            "a role change refuses their access tokens at once (they refresh to the new role)."
        ),
        responses=problems(404),
    )
    async def update(
        self,
        user_id: UserId,
        data: JSONBody[UserUpdateIn],
        services: Services,
        principal: CurrentPrincipal,
    ) -> UserOut:
        user = await services.users.update(
            _id(user_id), principal=principal, role=data.role, disabled=data.disabled
        )
        return UserOut.of(user)

    @post(
        "/{user_id:str}/reset-password",
        status_code=204,
        summary="Set a new password (ends the user's sessions)",
        description=(
            "Refuses the user's access tokens at once and revokes their refresh tokens; with "
            "`revoke_api_keys: true` their API keys too."
        ),
        responses=problems(404),
    )
    async def reset_password(
        self,
        user_id: UserId,
        data: JSONBody[PasswordResetIn],
        services: Services,
        principal: CurrentPrincipal,
    ) -> None:
        await services.users.reset_password(
            _id(user_id), data.password, principal=principal, revoke_api_keys=data.revoke_api_keys
        )
