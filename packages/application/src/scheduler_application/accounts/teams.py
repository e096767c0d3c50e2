"""Teams: create, list one's own, show, manage members and their roles, delete when empty.

Who may do what (docs/security.md, "Teams"):

* any caller whose global role writes tasks creates a team, and becomes its admin;
* a team's members (and the global roles that see every task) see it and its members; anyone
  else gets NotFound, as for a task;
* the team's admins (and global admins) add and remove members and change their roles; a
  member may leave; a team always keeps one admin;
* a personal team has its user as its one member: it cannot be shared, left or deleted.

Every membership change invalidates the process's cache of credentials once committed (a
principal carries its memberships); other processes hear of it from the database (a trigger on
``team_members`` notifies them, like a role change), so it counts from the next request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scheduler_application.accounts.access import (
    Principal,
    can_see,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
)
from scheduler_application.accounts.principal_cache import PrincipalCache
from scheduler_application.errors import AlreadyExists, Conflict, NotFound, PermissionDenied
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.repositories import TaskFilter
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.accounts import User, canonical_username
from scheduler_domain.teams import Membership, Team, TeamRole, validate_team_name


@dataclass(frozen=True, slots=True)
class TeamMember:
    """A member as shown: the membership with the user's name."""

    user_id: str
    username: str
    role: TeamRole


@dataclass(frozen=True, slots=True)
class TeamView:
    team: Team
    #: The caller's own role in it (None: a global role that sees it without membership).
    role: TeamRole | None
    members: tuple[TeamMember, ...] = ()


async def resolve_team(uow: UnitOfWork, ref: str, *, field: str = "team") -> Team:
    """A team by id or by name; NotFound naming ``field``."""
    team = await uow.teams.get(ref)
    if team is None and isinstance(ref, str):
        team = await uow.teams.get_by_name(ref.lower())
    if team is None:
        raise NotFound(f"team {ref!r} not found", field=field)
    return team


class TeamService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        principal_cache: PrincipalCache | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._cache = principal_cache

    async def create(self, name: str, *, principal: Principal) -> TeamView:
        ensure_can_write_tasks(principal)
        name = validate_team_name(name)
        now = self._clock.now()
        team = Team(name=name, created_at=now)
        async with self._uow_factory() as uow:
            if await uow.teams.get_by_name(name) is not None:
                raise AlreadyExists(f"team {name!r} already exists", field="name")
            await uow.teams.add(team)
            await uow.teams.set_member(
                Membership(
                    team_id=team.id,
                    user_id=principal.subject_id,
                    role=TeamRole.ADMIN,
                    created_at=now,
                )
            )
            view = await self._view(uow, team, principal)
            await uow.commit()
        self._invalidate()
        return view

    async def list_mine(self, *, principal: Principal) -> list[TeamView]:
        """The caller's teams (their personal one included), by name."""
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            return [
                TeamView(team=team, role=role)
                for team, role in await uow.teams.of_user(principal.subject_id)
            ]

    async def get(self, ref: str, *, principal: Principal) -> TeamView:
        async with self._uow_factory() as uow:
            team = await self._visible(uow, ref, principal)
            return await self._view(uow, team, principal)

    async def set_member(
        self, ref: str, user: str, role: TeamRole, *, principal: Principal
    ) -> TeamView:
        """Add ``user`` (a user id or username) with ``role``, or change their role."""
        role = TeamRole(role)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            team = await self._managed(uow, ref, principal)
            member = await _user(uow, user)
            members = {m.user_id: m for m in await uow.teams.members(team.id)}
            current = members.get(member.id)
            if (
                current is not None
                and current.role is TeamRole.ADMIN
                and role is not TeamRole.ADMIN
                and _admins(members.values()) == 1
            ):
                raise Conflict("a team keeps at least one admin", field="role")
            await uow.teams.set_member(
                Membership(
                    team_id=team.id,
                    user_id=member.id,
                    role=role,
                    created_at=current.created_at if current is not None else now,
                )
            )
            view = await self._view(uow, team, principal)
            await uow.commit()
        self._invalidate()
        return view

    async def change_role(
        self, ref: str, user: str, role: TeamRole, *, principal: Principal
    ) -> TeamView:
        """Like :meth:`set_member`, for a member only (NotFound naming ``user`` otherwise)."""
        async with self._uow_factory() as uow:
            team = await self._managed(uow, ref, principal)
            member = await _user(uow, user)
            if member.id not in {m.user_id for m in await uow.teams.members(team.id)}:
                raise NotFound(f"{user!r} is not a member of team {team.name}", field="user")
        return await self.set_member(ref, user, role, principal=principal)

    async def remove_member(self, ref: str, user: str, *, principal: Principal) -> TeamView:
        """Team admins remove anyone; a member may remove themselves (leave)."""
        async with self._uow_factory() as uow:
            team = await self._visible(uow, ref, principal)
            member = await _user(uow, user)
            if member.id != principal.subject_id:
                self._ensure_manages(team, principal)
            elif team.personal:
                raise Conflict("nobody leaves a personal team", field="user")
            members = {m.user_id: m for m in await uow.teams.members(team.id)}
            current = members.get(member.id)
            if current is None:
                raise NotFound(f"{user!r} is not a member of team {team.name}", field="user")
            if current.role is TeamRole.ADMIN and _admins(members.values()) == 1:
                raise Conflict("a team keeps at least one admin", field="user")
            await uow.teams.remove_member(team.id, member.id)
            view = await self._view(uow, team, principal)
            await uow.commit()
        self._invalidate()
        return view

    async def delete(self, ref: str, *, principal: Principal) -> None:
        """Only a team that owns no task (move or delete them first)."""
        async with self._uow_factory() as uow:
            team = await self._managed(uow, ref, principal, allow_personal=True)
            if team.personal:
                raise Conflict("a personal team cannot be deleted", field="team")
            owned = await uow.tasks.count(TaskFilter(team_ids=frozenset({team.id})))
            if owned:
                raise Conflict(
                    f"team {team.name} still owns {owned} task(s): move or delete them first",
                    field="team",
                )
            await uow.teams.delete(team.id)
            await uow.commit()
        self._invalidate()

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    async def _visible(uow: UnitOfWork, ref: str, principal: Principal) -> Team:
        ensure_can_read_tasks(principal)
        try:
            team = await resolve_team(uow, ref, field="id")
        except NotFound:
            raise NotFound(f"team {ref} not found", field="id") from None
        if not can_see(principal, team.id):
            raise NotFound(f"team {ref} not found", field="id")
        return team

    async def _managed(
        self, uow: UnitOfWork, ref: str, principal: Principal, *, allow_personal: bool = False
    ) -> Team:
        team = await self._visible(uow, ref, principal)
        self._ensure_manages(team, principal)
        if team.personal and not allow_personal:
            raise Conflict("a personal team has its user as its only member", field="team")
        return team

    @staticmethod
    def _ensure_manages(team: Team, principal: Principal) -> None:
        if principal.role.manages_accounts:
            return
        role = principal.team_role(team.id)
        if role is None or not role.manages_members:
            raise PermissionDenied(
                f"only an admin of team {team.name} manages its members "
                f"(your role: {role.value if role else 'none'})"
            )

    @staticmethod
    async def _view(uow: UnitOfWork, team: Team, principal: Principal) -> TeamView:
        members = await uow.teams.members(team.id)
        users = {m.user_id: await uow.users.get(m.user_id) for m in members}
        shown = tuple(
            TeamMember(
                user_id=m.user_id,
                username=u.username if (u := users[m.user_id]) is not None else m.user_id,
                role=m.role,
            )
            for m in members
        )
        mine = next((m.role for m in members if m.user_id == principal.subject_id), None)
        return TeamView(team=team, role=mine, members=shown)

    def _invalidate(self) -> None:
        if self._cache is not None:
            self._cache.invalidate()


def _admins(members: Iterable[Membership]) -> int:
    return sum(1 for m in members if m.role is TeamRole.ADMIN)


async def _user(uow: UnitOfWork, ref: str) -> User:
    user = await uow.users.get(ref)
    if user is None and isinstance(ref, str):
        user = await uow.users.get_by_username(canonical_username(ref))
    if user is None:
        raise NotFound(f"user {ref!r} not found", field="user")
    return user
