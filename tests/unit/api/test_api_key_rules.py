"""Who may issue which API keys, see them and revoke them."""

from __future__ import annotations

import pytest

from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.api_keys import ApiKeyService, may_grant, parse_key_prefix
from scheduler_application.errors import NotFound, PermissionDenied
from scheduler_application.testing import FakeClock
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError

ALICE = Principal("alice", Role.USER)
BOB = Principal("bob", Role.USER)
ADMIN = Principal("root", Role.ADMIN)


@pytest.mark.parametrize(
    ("issuer", "role", "allowed"),
    [
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.WORKER, True),
        (Role.OPERATOR, Role.OPERATOR, True),
        (Role.OPERATOR, Role.USER, True),
        (Role.OPERATOR, Role.ADMIN, False),
        (Role.OPERATOR, Role.WORKER, False),
        (Role.USER, Role.VIEWER, True),
        (Role.USER, Role.OPERATOR, False),
        (Role.VIEWER, Role.USER, False),
        (Role.WORKER, Role.WORKER, False),
    ],
)
def test_a_key_never_exceeds_its_issuer(issuer: Role, role: Role, allowed: bool) -> None:
    assert may_grant(issuer, role) is allowed


async def test_issued_key_is_well_formed_and_stored_hashed(keys: ApiKeyService) -> None:
    issued = await keys.issue(principal=ALICE, name="ci")

    assert parse_key_prefix(issued.secret) == issued.key.prefix
    assert issued.secret not in issued.key.secret_hash
    assert issued.key.role is Role.USER


async def test_role_above_the_issuers_is_refused(keys: ApiKeyService) -> None:
    with pytest.raises(PermissionDenied) as refused:
        await keys.issue(principal=ALICE, name="up", role=Role.OPERATOR)

    assert refused.value.field == "role"


async def test_api_keys_and_workers_cannot_issue(keys: ApiKeyService) -> None:
    with pytest.raises(PermissionDenied):
        await keys.issue(principal=Principal("alice", Role.USER, via="api_key"), name="x")
    with pytest.raises(PermissionDenied):
        await keys.issue(principal=Principal("w", Role.WORKER), name="x")


async def test_expiry_in_the_past_is_invalid(keys: ApiKeyService, clock: FakeClock) -> None:
    with pytest.raises(ValidationError) as invalid:
        await keys.issue(principal=ALICE, name="x", expires_at=clock.now())

    assert invalid.value.field == "expires_at"


async def test_keys_are_private_to_their_owner_but_not_to_admins(keys: ApiKeyService) -> None:
    mine = await keys.issue(principal=ALICE, name="mine")

    with pytest.raises(NotFound):
        await keys.get(mine.key.id, principal=BOB)
    with pytest.raises(NotFound):
        await keys.revoke(mine.key.id, principal=BOB)
    assert await keys.list(principal=BOB, owner_id="alice") == []
    assert [k.id for k in await keys.list(principal=ADMIN, owner_id="alice")] == [mine.key.id]
    assert (await keys.revoke(mine.key.id, principal=ADMIN)).revoked_at is not None
