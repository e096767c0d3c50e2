"""User accounts: enough for the CLI's ``create-admin`` and the API's user administration."""

from __future__ import annotations

import asyncio
from datetime import datetime

from scheduler_application.accounts.access import SYSTEM, Principal, ensure_manages_accounts
from scheduler_application.errors import AlreadyExists, Conflict
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.security import PasswordHasher
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.accounts import (
    Role,
    User,
    canonical_username,
    validate_password,
    validate_username,
)
from scheduler_domain.teams import Membership, Team, TeamRole

ADMIN_USERNAME = "admin"


async def add_personal_team(uow: UnitOfWork, user: User, *, now: datetime) -> Team:
    """The user's personal team (id = the user's id), with the user as its admin: where their
    tasks go unless they name another team."""
    team = Team.personal_for(user.id, user.username, now=now)
    await uow.teams.add(team)
    await uow.teams.set_member(
        Membership(team_id=team.id, user_id=user.id, role=TeamRole.ADMIN, created_at=now)
    )
    return team


class AccountService:
    def __init__(
        self, *, uow_factory: UnitOfWorkFactory, clock: Clock, hasher: PasswordHasher
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._hasher = hasher

    async def create_user(
        self, username: str, password: str, role: Role, *, principal: Principal = SYSTEM
    ) -> User:
        """A new user; AlreadyExists (field ``username``) when the name is taken."""
        ensure_manages_accounts(principal)
        username = validate_username(username)
        validate_password(password)
        role = Role(role)
        async with self._uow_factory() as uow:
            if await uow.users.get_by_username(username) is not None:
                raise AlreadyExists(f"user {username!r} already exists", field="username")
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        now = self._clock.now()
        user = User(
            username=username,
            password_hash=password_hash,
            role=role,
            created_at=now,
            updated_at=now,
        )
        async with self._uow_factory() as uow:
            await uow.users.add(user)
            await add_personal_team(uow, user, now=now)
            await uow.commit()
        return user

    async def ensure_admin(
        self, password: str, *, username: str = ADMIN_USERNAME
    ) -> tuple[User, bool]:
        """The admin account, created with ``password`` if missing; ``(user, created)``.

        An existing admin keeps its password. A non-admin holding the name is a Conflict.
        """
        username = canonical_username(username)
        async with self._uow_factory() as uow:
            existing = await uow.users.get_by_username(username)
        if existing is not None:
            if existing.role is not Role.ADMIN:
                raise Conflict(
                    f"user {username!r} exists with role {existing.role.value}", field="username"
                )
            return existing, False
        try:
            return await self.create_user(username, password, Role.ADMIN), True
        except AlreadyExists:
            async with self._uow_factory() as uow:
                raced = await uow.users.get_by_username(username)
            if raced is None or raced.role is not Role.ADMIN:
                raise
            return raced, False
