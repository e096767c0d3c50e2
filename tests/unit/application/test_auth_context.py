from __future__ import annotations

import pytest

from scheduler_application.accounts.access import (
    SYSTEM,
    Principal,
    can_change,
    can_see,
    change_scope,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
    ensure_changeable,
    ensure_manages_accounts,
    ensure_operates_workers,
    ensure_runs_work,
    ensure_visible,
    team_scope,
)
from scheduler_application.errors import NotFound, PermissionDenied
from scheduler_domain.accounts import Role
from scheduler_domain.teams import TeamRole


@pytest.mark.parametrize(
    ("role", "own", "others"),
    [
        (Role.ADMIN, True, True),
        (Role.OPERATOR, True, True),
        (Role.USER, True, False),
        (Role.VIEWER, True, False),
        (Role.WORKER, False, False),
    ],
)
def test_who_sees_whose_objects(role: Role, own: bool, others: bool) -> None:
    principal = Principal("me", role)
    assert can_see(principal, "me") is own
    assert can_see(principal, "someone-else") is others


def test_someone_elses_object_is_not_found_never_forbidden() -> None:
    with pytest.raises(NotFound):
        ensure_visible(Principal("me", Role.USER), "other", kind="task", object_id="t1")
    ensure_visible(Principal("me", Role.USER), "me", kind="task", object_id="t1")


@pytest.mark.parametrize(
    ("role", "read", "write"),
    [
        (Role.ADMIN, True, True),
        (Role.OPERATOR, True, True),
        (Role.USER, True, True),
        (Role.VIEWER, True, False),
        (Role.WORKER, False, False),
    ],
)
def test_roles_that_may_not_act_at_all_are_denied(role: Role, read: bool, write: bool) -> None:
    principal = Principal("me", role)
    for check, allowed in ((ensure_can_read_tasks, read), (ensure_can_write_tasks, write)):
        if allowed:
            check(principal)
        else:
            with pytest.raises(PermissionDenied):
                check(principal)


def test_team_scope_limits_lists_to_the_callers_teams_unless_the_role_sees_all() -> None:
    assert team_scope(Principal("me", Role.USER)) == {"me"}
    member = Principal("me", Role.VIEWER, teams={"t1": TeamRole.VIEWER, "t2": TeamRole.ADMIN})
    assert team_scope(member) == {"me", "t1", "t2"}
    assert team_scope(Principal("me", Role.OPERATOR)) is None
    with pytest.raises(PermissionDenied):
        team_scope(Principal("w", Role.WORKER))


# (global role, role in team "t", sees t's objects, changes them)
TEAM_RULES = [
    (Role.USER, None, False, False),
    (Role.USER, TeamRole.VIEWER, True, False),
    (Role.USER, TeamRole.EDITOR, True, True),
    (Role.USER, TeamRole.ADMIN, True, True),
    # A global viewer reads its teams' objects and never changes them, whatever its team role.
    (Role.VIEWER, None, False, False),
    (Role.VIEWER, TeamRole.VIEWER, True, False),
    (Role.VIEWER, TeamRole.EDITOR, True, False),
    (Role.VIEWER, TeamRole.ADMIN, True, False),
    # Roles that see everything act on every team's objects, member or not.
    (Role.OPERATOR, None, True, True),
    (Role.ADMIN, None, True, True),
    (Role.WORKER, TeamRole.ADMIN, False, False),
]


@pytest.mark.parametrize(("role", "team_role", "sees", "changes"), TEAM_RULES)
def test_the_team_rule(role: Role, team_role: TeamRole | None, sees: bool, changes: bool) -> None:
    principal = Principal("me", role, teams={} if team_role is None else {"t": team_role})
    assert can_see(principal, "t") is sees
    assert can_change(principal, "t") is changes
    if not sees:
        with pytest.raises(NotFound):
            ensure_changeable(principal, "t", kind="task", object_id="x")
    elif not changes:
        with pytest.raises(PermissionDenied, match="read-only"):
            ensure_changeable(principal, "t", kind="task", object_id="x")
    else:
        ensure_changeable(principal, "t", kind="task", object_id="x")


def test_a_user_is_admin_of_their_personal_team_whose_id_is_theirs() -> None:
    principal = Principal("me", Role.USER)
    assert principal.team_role("me") is TeamRole.ADMIN
    assert can_change(principal, "me")
    assert not can_see(principal, "you")


def test_bulk_actions_select_only_from_teams_the_caller_changes() -> None:
    member = Principal("me", Role.USER, teams={"viewed": TeamRole.VIEWER, "ed": TeamRole.EDITOR})
    assert change_scope(member) == {"me", "ed"}
    assert change_scope(Principal("op", Role.OPERATOR)) is None
    with pytest.raises(PermissionDenied):
        change_scope(Principal("v", Role.VIEWER, teams={"ed": TeamRole.EDITOR}))


def test_worker_protocol_operator_and_account_rules() -> None:
    ensure_runs_work(Principal("w", Role.WORKER))
    with pytest.raises(PermissionDenied):
        ensure_runs_work(Principal("me", Role.OPERATOR))
    ensure_operates_workers(Principal("o", Role.OPERATOR))
    with pytest.raises(PermissionDenied):
        ensure_operates_workers(Principal("me", Role.USER))
    with pytest.raises(PermissionDenied):
        ensure_manages_accounts(Principal("o", Role.OPERATOR))


def test_system_principal_sees_everything_and_is_audited_as_system() -> None:
    assert can_see(SYSTEM, "anyone")
    assert SYSTEM.actor == "system:system"
    assert Principal("k1", Role.USER, via="api_key").actor == "api_key:k1"
