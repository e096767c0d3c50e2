"""User administration (admins only): create, list, inspect, change role or disabled flag,
reset passwords.

A role change, disabling a user and a password reset raise the user's token generation, so
their access tokens are refused at once (:mod:`scheduler_application.accounts.auth`);
disabling and a reset also revoke their refresh tokens, and a reset their API keys when the
admin asks."""

from __future__ import annotations

import asyncio

from scheduler_application.accounts.access import Principal, ensure_manages_accounts
from scheduler_application.accounts.principal_cache import PrincipalCache
from scheduler_application.accounts.users import AccountService
from scheduler_application.errors import NotFound
from scheduler_application.paging import DEFAULT_PAGE_SIZE, page_limit
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.repositories import Page
from scheduler_application.ports.security import PasswordHasher
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.accounts import Role, User, validate_password
from scheduler_domain.errors import ValidationError


class UserAdminService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        hasher: PasswordHasher,
        principal_cache: PrincipalCache | None = None,
    ) -> None:
        """``principal_cache``: the process's cache of accepted credentials, which a role
        change, disabling and a reset invalidate."""
        self._uow_factory = uow_factory
        self._clock = clock
        self._hasher = hasher
        self._cache = principal_cache
        self._accounts = AccountService(uow_factory=uow_factory, clock=clock, hasher=hasher)

    async def create(
        self, username: str, password: str, role: Role, *, principal: Principal
    ) -> User:
        return await self._accounts.create_user(username, password, role, principal=principal)

    async def list(
        self, *, principal: Principal, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[User]:
        ensure_manages_accounts(principal)
        async with self._uow_factory() as uow:
            return await uow.users.list(limit=page_limit(limit), cursor=cursor)

    async def get(self, user_id: str, *, principal: Principal) -> User:
        ensure_manages_accounts(principal)
        async with self._uow_factory() as uow:
            return await _load(uow, user_id)

    async def me(self, principal: Principal) -> User:
        """The account behind any authenticated caller (a user or an API key's owner)."""
        async with self._uow_factory() as uow:
            return await _load(uow, principal.subject_id)

    async def update(
        self,
        user_id: str,
        *,
        principal: Principal,
        role: Role | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change the role and/or the disabled flag. Admins cannot demote or disable themselves,
        so the instance never loses its last way in by accident."""
        ensure_manages_accounts(principal)
        if user_id == principal.subject_id:
            if role is not None and Role(role) is not principal.role:
                raise ValidationError("you cannot change your own role", field="role")
            if disabled:
                raise ValidationError("you cannot disable yourself", field="disabled")
        now = self._clock.now()
        async with self._uow_factory() as uow:
            user = await _load(uow, user_id)
            role_changed = role is not None and Role(role) is not user.role
            if role is not None:
                user.role = Role(role)
            newly_disabled = bool(disabled) and not user.disabled
            if disabled is not None:
                user.disabled = disabled
            user.updated_at = now
            await uow.users.update(user)
            if role_changed or newly_disabled:
                user.token_generation = await uow.users.bump_token_generation(user.id)
            if newly_disabled:
                await uow.refresh_tokens.revoke_for_user(user.id, now=now)
            await uow.commit()
        self._invalidate()
        return user

    async def reset_password(
        self,
        user_id: str,
        password: str,
        *,
        principal: Principal,
        revoke_api_keys: bool = False,
    ) -> User:
        """Set a new password and end every session of the user: their access tokens (by
        generation) and refresh tokens, and with ``revoke_api_keys`` their API keys too."""
        ensure_manages_accounts(principal)
        validate_password(password)
        async with self._uow_factory() as uow:
            await _load(uow, user_id)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            user = await _load(uow, user_id)
            user.password_hash = password_hash
            user.updated_at = now
            await uow.users.update(user)
            user.token_generation = await uow.users.bump_token_generation(user.id)
            await uow.refresh_tokens.revoke_for_user(user.id, now=now)
            if revoke_api_keys:
                for key in await uow.api_keys.list(owner_id=user.id):
                    if key.revoked_at is None:
                        key.revoke(now)
                        await uow.api_keys.update(key)
            await uow.commit()
        self._invalidate()
        return user

    def _invalidate(self) -> None:
        if self._cache is not None:
            self._cache.invalidate()


async def _load(uow: UnitOfWork, user_id: str) -> User:
    user = await uow.users.get(user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", field="user_id")
    return user
