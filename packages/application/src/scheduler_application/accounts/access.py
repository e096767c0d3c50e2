"""Who is asking, and the access rules every use case applies before it reads or writes.

Two kinds of refusal, deliberately different:

* the caller's *role* may never do the action (a viewer editing, a worker reading tasks):
  :class:`PermissionDenied` — it reveals nothing about any object;
* the object belongs to someone the caller may not see: :class:`NotFound`, exactly as if it did
  not exist, so ids cannot be probed (BOLA).

Objects (tasks, their runs and events) belong to a *team*. The one rule, applied by every use
case through :func:`can_see` and :func:`can_change`: a global role that sees every task
(admin, operator) sees and changes everything; anyone else sees the objects of the teams they
are a member of, and changes them if their global role writes tasks *and* their role in that
team is ``editor`` or ``admin``. A user is always admin of their personal team (its id is
theirs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from scheduler_application.errors import NotFound, PermissionDenied
from scheduler_domain.accounts import Role
from scheduler_domain.teams import TeamRole

_NO_TEAMS: Mapping[str, TeamRole] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user, an API key (``via="api_key"``) or the system itself.

    ``subject_id`` is the user (an API key's owner); ``key_id`` the API key presented, if any.
    Two principals are equal when they act as the same user with the same role, whichever
    key they came with. ``teams`` are the user's memberships ``{team id: role}``, read with
    the credential (and forgotten with it when a membership changes)."""

    subject_id: str
    role: Role
    via: str = "user"
    key_id: str | None = field(default=None, compare=False)
    teams: Mapping[str, TeamRole] = field(default_factory=lambda: _NO_TEAMS, compare=False)

    def team_role(self, team_id: str) -> TeamRole | None:
        """The caller's role in ``team_id``: admin of their own personal team, else their
        membership's, else None."""
        if team_id == self.subject_id and self.via != "system":
            return TeamRole.ADMIN
        return self.teams.get(team_id)

    @property
    def team_ids(self) -> frozenset[str]:
        """Every team the caller is a member of, their personal team included."""
        return frozenset((self.subject_id, *self.teams))

    @property
    def credential(self) -> str:
        """The credential itself: ``api_key:<key id>`` or ``user:<user id>`` — what a worker
        registered over HTTP is bound to (two keys of one owner are two credentials)."""
        if self.via == "api_key" and self.key_id is not None:
            return f"api_key:{self.key_id}"
        return f"{self.via}:{self.subject_id}"

    @property
    def actor(self) -> str:
        """How the caller appears in the audit trail (``RunEvent.actor``)."""
        return f"{self.via}:{self.subject_id}"


#: The dispatcher's and workers' own loops: sees everything, owns nothing.
SYSTEM = Principal(subject_id="system", role=Role.ADMIN, via="system")


def can_see(principal: Principal, team_id: str) -> bool:
    """Whether ``principal`` may know that an object of team ``team_id`` exists."""
    if not principal.role.can_read_tasks:
        return False
    return principal.role.sees_all_tasks or principal.team_role(team_id) is not None


def can_change(principal: Principal, team_id: str) -> bool:
    """Whether ``principal`` may change (create, edit, trigger, cancel, delete) an object of
    team ``team_id``."""
    if not principal.role.can_write_tasks:
        return False
    if principal.role.sees_all_tasks:
        return True
    role = principal.team_role(team_id)
    return role is not None and role.can_write


def team_scope(principal: Principal) -> frozenset[str] | None:
    """The teams a list must be restricted to; None when the role sees every team's objects."""
    ensure_can_read_tasks(principal)
    return None if principal.role.sees_all_tasks else principal.team_ids


def change_scope(principal: Principal) -> frozenset[str] | None:
    """The teams whose objects the caller may change (what a bulk action selects from); None
    when the role changes every team's objects."""
    ensure_can_write_tasks(principal)
    if principal.role.sees_all_tasks:
        return None
    return frozenset(t for t in principal.team_ids if can_change(principal, t))


def ensure_can_read_tasks(principal: Principal) -> None:
    if not principal.role.can_read_tasks:
        raise PermissionDenied(f"role {principal.role.value!r} cannot read tasks or runs")


def ensure_can_write_tasks(principal: Principal) -> None:
    if not principal.role.can_write_tasks:
        raise PermissionDenied(f"role {principal.role.value!r} cannot change tasks or runs")


def ensure_visible(principal: Principal, team_id: str, *, kind: str, object_id: str) -> None:
    """Raise NotFound for an object the caller may not see (after the role check passed)."""
    if not can_see(principal, team_id):
        raise NotFound(f"{kind} {object_id} not found", field="id")


def ensure_changeable(principal: Principal, team_id: str, *, kind: str, object_id: str) -> None:
    """NotFound for an object the caller may not see; PermissionDenied for one they see but
    may not change (a viewer of its team: its existence is no secret to them)."""
    ensure_visible(principal, team_id, kind=kind, object_id=object_id)
    if not can_change(principal, team_id):
        role = principal.team_role(team_id)
        raise PermissionDenied(
            f"your role in team {team_id} is {role.value if role else 'none'}: "
            f"{kind}s of this team are read-only to you"
        )


def ensure_operates_workers(principal: Principal) -> None:
    if not principal.role.operates_workers:
        raise PermissionDenied(f"role {principal.role.value!r} cannot operate workers")


def ensure_runs_work(principal: Principal) -> None:
    """The worker protocol (claim, heartbeat, complete): adapters call this before delegating."""
    if not principal.role.runs_work:
        raise PermissionDenied(f"role {principal.role.value!r} cannot use the worker protocol")


def ensure_manages_accounts(principal: Principal) -> None:
    if not principal.role.manages_accounts:
        raise PermissionDenied(f"role {principal.role.value!r} cannot manage accounts")
