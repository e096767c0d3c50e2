"""Log-in, tokens, users and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from scheduler_application.accounts.auth import MAX_PASSWORD_CHARS, TokenPair
from scheduler_domain.accounts import MIN_PASSWORD_LENGTH, ApiKey, Role, User

Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
#: What the domain accepts (``validate_username``/``validate_password``), stated in the
#: document so that clients and contract fuzzers know it.
Username = Annotated[
    str, msgspec.Meta(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")
]
NewPassword = Annotated[str, msgspec.Meta(min_length=MIN_PASSWORD_LENGTH, max_length=1024)]


class LoginIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(max_length=256)]
    password: Annotated[str, msgspec.Meta(max_length=4096)]


class RefreshIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    refresh_token: Secret


class TokenOut(msgspec.Struct, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    refresh_expires_in: int
    user_id: str
    role: Role

    @classmethod
    def of(cls, pair: TokenPair) -> TokenOut:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expires_in=pair.expires_in,
            refresh_expires_in=pair.refresh_expires_in,
            user_id=pair.user.id,
            role=pair.user.role,
        )


class UserOut(msgspec.Struct, kw_only=True):
    id: str
    username: str
    role: Role
    disabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            role=user.role,
            disabled=user.disabled,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class MeOut(msgspec.Struct, kw_only=True):
    """The caller: the account, and the role and kind of the credential used for this request
    (an API key's role may be lower than its owner's)."""

    user: UserOut
    role: Role
    via: str


class UserPage(msgspec.Struct, kw_only=True):
    items: list[UserOut]
    next_cursor: str | None
    limit: int


class UserCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    username: Username
    password: NewPassword
    role: Role = Role.USER


class UserUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only what an admin may change; anything else (``username``, ``id``…) is refused."""

    role: Role | None = None
    disabled: bool | None = None


class PasswordResetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``revoke_api_keys``: also revoke every API key the user owns."""

    password: NewPassword
    revoke_api_keys: bool = False


class PasswordChangeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    current_password: Annotated[str, msgspec.Meta(max_length=4096)]
    new_password: Annotated[
        str, msgspec.Meta(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_CHARS)
    ]


class ApiKeyCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    role: Role | None = None
    expires_at: datetime | None = None


class ApiKeyOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    prefix: str
    owner_id: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            owner_id=key.owner_id,
            role=key.role,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
        )


class IssuedApiKeyOut(msgspec.Struct, kw_only=True):
    """``key`` is the secret: shown once, here; only its hash is stored."""

    key: str
    api_key: ApiKeyOut


class ApiKeyPage(msgspec.Struct, kw_only=True):
    items: list[ApiKeyOut]
    next_cursor: str | None
    limit: int
