"""API keys: long-lived credentials for scripts and workers, issued by a user for a role no
higher than their own.

A key reads ``sk_<prefix>_<secret>``. Only the public ``prefix`` (to find the row) and the
SHA-256 of the whole key are stored; the key itself is shown once, when it is issued. SHA-256
is enough here because the secret has 256 bits of entropy (nothing to brute-force, unlike a
password); checks compare digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.principal_cache import PrincipalCache
from scheduler_application.errors import NotFound, PermissionDenied
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.accounts import ApiKey, Role
from scheduler_domain.errors import ValidationError

API_KEY_PREFIX = "sk_"
_PREFIX_LENGTH = 12
_KEY = re.compile(r"^sk_(?P<prefix>[a-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
MAX_NAME_LENGTH = 200
#: Compared against when no key has the presented prefix, so a miss costs what a hit costs.
_ABSENT_DIGEST = hashlib.sha256(b"no such key").hexdigest()

_RANK = {Role.VIEWER: 1, Role.USER: 2, Role.OPERATOR: 3, Role.ADMIN: 4}


def may_grant(issuer: Role, role: Role) -> bool:
    """Whether a holder of ``issuer`` may hand out ``role``: never more than they have, and the
    worker role (which sees every task's parameters through claims) only by an admin."""
    if issuer is Role.ADMIN:
        return True
    if Role.WORKER in (issuer, role):
        return False
    return _RANK[role] <= _RANK[issuer]


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key_prefix(key: str) -> str | None:
    """The lookup prefix of a well-formed key, or None."""
    match = _KEY.match(key)
    return match["prefix"] if match else None


def digest_matches(key: str, stored: ApiKey | None) -> bool:
    """Constant-time check of ``key`` against the stored digest (or a dummy one)."""
    expected = stored.secret_hash if stored is not None else _ABSENT_DIGEST
    matched = hmac.compare_digest(key_digest(key), expected)
    return matched and stored is not None


def new_key() -> tuple[str, str]:
    """``(prefix, key)`` for a fresh key."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(_PREFIX_LENGTH))
    return prefix, f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A new key and its secret, which exists only in this object and the client's hands."""

    key: ApiKey
    secret: str


class ApiKeyService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        principal_cache: PrincipalCache | None = None,
    ) -> None:
        """``principal_cache``: the process's cache of accepted credentials, which a revocation
        invalidates."""
        self._uow_factory = uow_factory
        self._clock = clock
        self._cache = principal_cache

    async def issue(
        self,
        *,
        principal: Principal,
        name: str,
        role: Role | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedApiKey:
        _ensure_key_holder(principal)
        if principal.via == "api_key":
            raise PermissionDenied("an API key cannot issue API keys; log in as a user")
        wanted = Role(role) if role is not None else principal.role
        if not may_grant(principal.role, wanted):
            raise PermissionDenied(
                f"role {principal.role.value!r} cannot issue a key with role {wanted.value!r}",
                field="role",
            )
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise ValidationError(f"name must be 1-{MAX_NAME_LENGTH} characters", field="name")
        now = self._clock.now()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise ValidationError("expires_at needs a time zone offset", field="expires_at")
            if expires_at <= now:
                raise ValidationError("expires_at must be in the future", field="expires_at")
        prefix, secret = new_key()
        key = ApiKey(
            name=name.strip(),
            prefix=prefix,
            secret_hash=key_digest(secret),
            owner_id=principal.subject_id,
            role=wanted,
            created_at=now,
            expires_at=expires_at,
        )
        async with self._uow_factory() as uow:
            await uow.api_keys.add(key)
            await uow.commit()
        return IssuedApiKey(key, secret)

    async def list(self, *, principal: Principal, owner_id: str | None = None) -> list[ApiKey]:
        """The caller's keys; an admin sees everyone's (or one ``owner_id``'s)."""
        _ensure_key_holder(principal)
        if principal.role is not Role.ADMIN:
            if owner_id not in (None, principal.subject_id):
                return []
            owner_id = principal.subject_id
        async with self._uow_factory() as uow:
            return await uow.api_keys.list(owner_id=owner_id)

    async def get(self, key_id: str, *, principal: Principal) -> ApiKey:
        _ensure_key_holder(principal)
        async with self._uow_factory() as uow:
            return await _load_visible(uow, key_id, principal)

    async def revoke(self, key_id: str, *, principal: Principal) -> ApiKey:
        """Revoked at once: the next request with the key is refused. Revoking twice is fine."""
        _ensure_key_holder(principal)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            key = await _load_visible(uow, key_id, principal)
            if key.revoked_at is None:
                key.revoke(now)
                await uow.api_keys.update(key)
                await uow.commit()
        if self._cache is not None:
            self._cache.invalidate()
        return key


def _ensure_key_holder(principal: Principal) -> None:
    if principal.role is Role.WORKER:
        raise PermissionDenied("role 'worker' can only use the worker protocol")


async def _load_visible(uow: UnitOfWork, key_id: str, principal: Principal) -> ApiKey:
    key = await uow.api_keys.get(key_id)
    if key is None or (principal.role is not Role.ADMIN and key.owner_id != principal.subject_id):
        raise NotFound(f"api key {key_id} not found", field="key_id")
    return key
