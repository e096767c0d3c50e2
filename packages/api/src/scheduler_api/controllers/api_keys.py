"""``/api/v1/api-keys``: issue (the secret is shown once), list, inspect and revoke keys."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Options, Services
from scheduler_api.openapi import problems
from scheduler_api.params import (
    LIMIT_DESCRIPTION,
    Cursor,
    instant,
    object_id,
    open_cursor,
    page_size,
    seal_cursor,
    slice_page,
)
from scheduler_api.schemas.accounts import ApiKeyCreateIn, ApiKeyOut, ApiKeyPage, IssuedApiKeyOut

KeyId = Annotated[str, PathParameter(description="API key id", max_length=64)]


def _id(key_id: str) -> str:
    return object_id(key_id, kind="api key", field="key_id")


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ("api-keys",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post(
        "/",
        summary="Issue an API key",
        description=(
            "The key (`sk_…`) is in the answer and nowhere else: only its hash is stored. Its "
            "role defaults to the caller's and may not exceed it; worker keys are for admins."
        ),
        responses=problems(),
    )
    async def issue(
        self, data: JSONBody[ApiKeyCreateIn], services: Services, principal: CurrentPrincipal
    ) -> Response[IssuedApiKeyOut]:
        issued = await services.api_keys.issue(
            principal=principal,
            name=data.name,
            role=data.role,
            expires_at=instant(data.expires_at, field="expires_at"),
        )
        return Response(
            IssuedApiKeyOut(key=issued.secret, api_key=ApiKeyOut.of(issued.key)),
            status_code=201,
            headers={"Location": f"/api/v1/api-keys/{issued.key.id}", "Cache-Control": "no-store"},
        )

    @get("/", summary="List API keys (yours; admins: anyone's)", responses=problems())
    async def list_keys(
        self,
        services: Services,
        options: Options,
        principal: CurrentPrincipal,
        owner_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, description=LIMIT_DESCRIPTION)] = 50,
        cursor: Cursor = None,
    ) -> ApiKeyPage:
        size = page_size(limit, options)
        keys = await services.api_keys.list(principal=principal, owner_id=owner_id)
        items, next_cursor = slice_page(
            keys,
            key=lambda k: (k.created_at.isoformat(), k.id),
            limit=size,
            cursor=open_cursor(cursor, options),
        )
        return ApiKeyPage(
            items=[ApiKeyOut.of(k) for k in items],
            next_cursor=seal_cursor(next_cursor, options),
            limit=size,
        )

    @get("/{key_id:str}", summary="Get an API key", responses=problems(404))
    async def get_key(
        self, key_id: KeyId, services: Services, principal: CurrentPrincipal
    ) -> ApiKeyOut:
        return ApiKeyOut.of(await services.api_keys.get(_id(key_id), principal=principal))

    @delete("/{key_id:str}", summary="Revoke an API key", responses=problems(404))
    async def remove(self, key_id: KeyId, services: Services, principal: CurrentPrincipal) -> None:
        await services.api_keys.revoke(_id(key_id), principal=principal)

    @post(
        "/{key_id:str}/revoke",
        status_code=200,
        summary="Revoke an API key (and show it)",
        responses=problems(404),
    )
    async def revoke(
        self, key_id: KeyId, services: Services, principal: CurrentPrincipal
    ) -> ApiKeyOut:
        return ApiKeyOut.of(await services.api_keys.revoke(_id(key_id), principal=principal))
