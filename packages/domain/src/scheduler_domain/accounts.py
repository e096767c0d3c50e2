"""Who may do what: users, roles, API keys and refresh tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from scheduler_domain.errors import ValidationError
from scheduler_domain.ids import new_id

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")
MIN_PASSWORD_LENGTH = 12


class Role(StrEnum):
    """DESIGN §10: admin (everything), operator (all tasks and runs, no user or key admin),
    user (own tasks and runs), viewer (read-only own), worker (worker protocol only)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    USER = "user"
    VIEWER = "viewer"
    WORKER = "worker"

    @property
    def sees_all_tasks(self) -> bool:
        return self in (Role.ADMIN, Role.OPERATOR)

    @property
    def can_write_tasks(self) -> bool:
        return self in (Role.ADMIN, Role.OPERATOR, Role.USER)

    @property
    def can_read_tasks(self) -> bool:
        return self is not Role.WORKER

    @property
    def manages_accounts(self) -> bool:
        return self is Role.ADMIN

    @property
    def operates_workers(self) -> bool:
        return self in (Role.ADMIN, Role.OPERATOR)

    @property
    def runs_work(self) -> bool:
        return self in (Role.ADMIN, Role.WORKER)


def canonical_username(username: str) -> str:
    """The form a username is stored and compared in: lower-cased, so ``Alice`` and ``alice``
    are one account. Only ASCII is lowered (a valid name is ASCII): ``str.lower`` would turn
    the Kelvin sign into ``k`` and let look-alike spellings reach an account."""
    return username.lower() if username.isascii() else username


def validate_username(username: str) -> str:
    """The canonical (lower-cased) username; ValidationError (field ``username``) if invalid."""
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise ValidationError(
            "username must be 2-64 letters, digits, '.', '_', '@' or '-'", field="username"
        )
    return canonical_username(username)


def validate_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if len(password) > 1024:
        raise ValidationError("password is limited to 1024 characters", field="password")
    return password


@dataclass(slots=True, kw_only=True)
class User:
    username: str
    password_hash: str
    role: Role
    created_at: datetime
    updated_at: datetime
    disabled: bool = False
    #: Every access token carries the generation it was issued under; raising it refuses them
    #: all at once (logout, password change or reset, disabling, a role change).
    token_generation: int = 0
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        self.username = validate_username(self.username)


@dataclass(slots=True, kw_only=True)
class ApiKey:
    """A long-lived credential. Only ``prefix`` (to find it) and a hash of the secret are kept."""

    name: str
    prefix: str
    secret_hash: str
    owner_id: str
    role: Role
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    id: str = field(default_factory=new_id)

    def is_usable(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def revoke(self, now: datetime) -> None:
        if self.revoked_at is None:
            self.revoked_at = now


@dataclass(slots=True, kw_only=True)
class RefreshToken:
    """One link of a rotating refresh-token family; reuse of a spent link revokes the family."""

    user_id: str
    family_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None
    id: str = field(default_factory=new_id)

    def is_usable(self, now: datetime) -> bool:
        return self.used_at is None and self.revoked_at is None and now < self.expires_at
