from __future__ import annotations

import pytest

from scheduler_application.accounts.access import (
    SYSTEM,
    Principal,
    can_see,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
    ensure_manages_accounts,
    ensure_operates_workers,
    ensure_runs_work,
    ensure_visible,
    owner_scope,
)
from scheduler_application.errors import NotFound, PermissionDenied
from scheduler_domain.accounts import Role


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


def test_owner_scope_limits_lists_unless_the_role_sees_all() -> None:
    assert owner_scope(Principal("me", Role.USER)) == "me"
    assert owner_scope(Principal("me", Role.VIEWER)) == "me"
    assert owner_scope(Principal("me", Role.OPERATOR)) is None
    with pytest.raises(PermissionDenied):
        owner_scope(Principal("w", Role.WORKER))


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
