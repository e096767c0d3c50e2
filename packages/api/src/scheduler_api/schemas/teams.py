"""Teams and their members."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from scheduler_application.accounts.teams import TeamView
from scheduler_domain.teams import TeamRole

TeamName = Annotated[str, msgspec.Meta(min_length=2, max_length=64)]
#: A user by id or username.
UserRef = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
#: ``viewer``, ``editor`` (also accepted as ``user``) or ``admin``.
RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


class TeamCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: TeamName


class MemberIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    user: UserRef
    role: RoleName


class RoleIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: RoleName


class MemberOut(msgspec.Struct, kw_only=True):
    user_id: str
    username: str
    role: TeamRole


class TeamOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    #: A user's personal team (its id is the user's): one member, cannot be shared or deleted.
    personal: bool
    #: The caller's role in it (null: a global admin or operator who is no member).
    role: TeamRole | None
    created_at: datetime
    #: Shown by ``GET /teams/{team}`` and the member changes; empty in lists.
    members: list[MemberOut]

    @classmethod
    def of(cls, view: TeamView) -> TeamOut:
        return cls(
            id=view.team.id,
            name=view.team.name,
            personal=view.team.personal,
            role=view.role,
            created_at=view.team.created_at,
            members=[
                MemberOut(user_id=m.user_id, username=m.username, role=m.role) for m in view.members
            ],
        )


class TeamList(msgspec.Struct, kw_only=True):
    items: list[TeamOut]
