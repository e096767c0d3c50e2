"""Teams and their members."""

from __future__ import annotations

import builtins

from sqlalchemy import delete, select, update
from sqlalchemy.engine import RowMapping

from scheduler_domain.teams import Membership, Team, TeamRole
from scheduler_infrastructure.persistence.repositories.base import SqlRepository
from scheduler_infrastructure.persistence.tables import team_members, teams

_t = teams.c
_m = team_members.c


def _team(row: RowMapping) -> Team:
    return Team(
        id=row["id"], name=row["name"], personal_of=row["personal_of"], created_at=row["created_at"]
    )


class SqlTeamRepository(SqlRepository):
    what = "team"

    async def add(self, team: Team) -> None:
        await self._insert_new(
            teams,
            {
                "id": team.id,
                "name": team.name,
                "personal_of": team.personal_of,
                "created_at": team.created_at,
            },
        )

    async def get(self, team_id: str) -> Team | None:
        row = await self._first(select(teams).where(_t.id == team_id))
        return None if row is None else _team(row)

    async def get_by_name(self, name: str) -> Team | None:
        row = await self._first(select(teams).where(_t.name == name))
        return None if row is None else _team(row)

    async def delete(self, team_id: str) -> None:
        # Members first: SQLite enforces the foreign key's cascade only with its pragma on.
        await self._execute(delete(team_members).where(_m.team_id == team_id))
        await self._execute(delete(teams).where(_t.id == team_id))

    async def of_user(self, user_id: str) -> builtins.list[tuple[Team, TeamRole]]:
        rows = await self._all(
            select(teams, _m.role)
            .select_from(teams.join(team_members, _m.team_id == _t.id))
            .where(_m.user_id == user_id)
            .order_by(_t.name)
        )
        return [(_team(row), TeamRole(row["role"])) for row in rows]

    async def roles_of(self, user_id: str) -> dict[str, TeamRole]:
        rows = await self._all(select(_m.team_id, _m.role).where(_m.user_id == user_id))
        return {row["team_id"]: TeamRole(row["role"]) for row in rows}

    async def members(self, team_id: str) -> builtins.list[Membership]:
        rows = await self._all(
            select(team_members).where(_m.team_id == team_id).order_by(_m.created_at, _m.user_id)
        )
        return [
            Membership(
                team_id=row["team_id"],
                user_id=row["user_id"],
                role=TeamRole(row["role"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    async def set_member(self, membership: Membership) -> None:
        result = await self._execute(
            update(team_members)
            .where(_m.team_id == membership.team_id, _m.user_id == membership.user_id)
            .values(role=membership.role.value)
        )
        if result.rowcount:
            return
        await self._insert_new(
            team_members,
            {
                "team_id": membership.team_id,
                "user_id": membership.user_id,
                "role": membership.role.value,
                "created_at": membership.created_at,
            },
        )

    async def remove_member(self, team_id: str, user_id: str) -> bool:
        result = await self._execute(
            delete(team_members).where(_m.team_id == team_id, _m.user_id == user_id)
        )
        return bool(result.rowcount)
