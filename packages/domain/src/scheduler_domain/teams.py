"""Teams: who shares tasks, and what each member may do with them.

A team owns tasks (and their runs and events); its members each have a :class:`TeamRole`.
Every user has a *personal team* whose id is the user's own id, named ``@<username>``, with
the user as its only member (admin): the single-owner model of earlier versions is exactly
that team, so a task created without a team lands there, and a user's own tasks stay private.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from scheduler_domain.errors import ValidationError
from scheduler_domain.ids import new_id

_TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
#: Personal teams are named ``@<username>``: a name no created team can take.
PERSONAL_PREFIX = "@"


class TeamRole(StrEnum):
    """A member's role within one team: ``viewer`` reads the team's tasks and runs, ``editor``
    also creates, changes, triggers and deletes them, ``admin`` also manages the members."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def can_write(self) -> bool:
        return self in (TeamRole.EDITOR, TeamRole.ADMIN)

    @property
    def manages_members(self) -> bool:
        return self is TeamRole.ADMIN


def parse_team_role(value: object, *, field_name: str = "role") -> TeamRole:
    """``user`` is accepted as the issue's name for ``editor``."""
    if value == "user":
        return TeamRole.EDITOR
    try:
        return TeamRole(str(value))
    except ValueError:
        raise ValidationError(
            f"{field_name} must be one of viewer, editor, admin", field=field_name
        ) from None


def validate_team_name(name: object) -> str:
    """The canonical (lower-cased) name of a team someone creates; ValidationError (``name``)."""
    if not isinstance(name, str) or not _TEAM_NAME.match(name.lower()):
        raise ValidationError(
            "name must be 2-64 lower-case letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
            field="name",
        )
    return name.lower()


def personal_team_name(username: str) -> str:
    return f"{PERSONAL_PREFIX}{username}"


@dataclass(slots=True, kw_only=True)
class Team:
    name: str
    created_at: datetime
    #: The user whose personal team this is (then ``id == personal_of``); None for a team
    #: someone created.
    personal_of: str | None = None
    id: str = field(default_factory=new_id)

    @property
    def personal(self) -> bool:
        return self.personal_of is not None

    @classmethod
    def personal_for(cls, user_id: str, username: str, *, now: datetime) -> Team:
        return cls(
            id=user_id, name=personal_team_name(username), personal_of=user_id, created_at=now
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    team_id: str
    user_id: str
    role: TeamRole
    created_at: datetime
