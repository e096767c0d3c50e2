from __future__ import annotations

import pytest
from application_fixtures import ALICE, OPERATOR

from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.users import AccountService
from scheduler_application.errors import AlreadyExists, Conflict, PermissionDenied
from scheduler_application.testing import (
    FakeClock,
    FakePasswordHasher,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError

PASSWORD = "correct horse battery staple"


@pytest.fixture
def hasher() -> FakePasswordHasher:
    return FakePasswordHasher()


@pytest.fixture
def accounts(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, hasher: FakePasswordHasher
) -> AccountService:
    return AccountService(uow_factory=uow_factory, clock=clock, hasher=hasher)


async def test_create_user_stores_a_hash_never_the_password(
    accounts: AccountService, hasher: FakePasswordHasher, store: InMemoryStore
) -> None:
    user = await accounts.create_user("ann", PASSWORD, Role.USER)
    stored = store.row("users", user.id)
    assert stored.role is Role.USER
    assert PASSWORD not in stored.password_hash
    assert hasher.verify(stored.password_hash, PASSWORD)


async def test_usernames_are_unique(accounts: AccountService) -> None:
    await accounts.create_user("ann", PASSWORD, Role.USER)
    with pytest.raises(AlreadyExists) as error:
        await accounts.create_user("ann", PASSWORD, Role.VIEWER)
    assert error.value.field == "username"


async def test_weak_passwords_and_bad_usernames_are_refused(accounts: AccountService) -> None:
    with pytest.raises(ValidationError) as password:
        await accounts.create_user("ann", "short", Role.USER)
    assert password.value.field == "password"
    with pytest.raises(ValidationError) as username:
        await accounts.create_user("a b", PASSWORD, Role.USER)
    assert username.value.field == "username"


async def test_only_admins_create_users(accounts: AccountService) -> None:
    for principal in (ALICE, OPERATOR):
        with pytest.raises(PermissionDenied):
            await accounts.create_user("ann", PASSWORD, Role.USER, principal=principal)
    admin = Principal("root", Role.ADMIN)
    assert (await accounts.create_user("ann", PASSWORD, Role.USER, principal=admin)).username


async def test_ensure_admin_creates_once_then_returns_the_existing_admin(
    accounts: AccountService, store: InMemoryStore, hasher: FakePasswordHasher
) -> None:
    admin, created = await accounts.ensure_admin(PASSWORD)
    assert created
    assert admin.role is Role.ADMIN
    assert admin.username == "admin"
    again, created_again = await accounts.ensure_admin("another long password")
    assert not created_again
    assert again.id == admin.id
    assert hasher.verify(store.row("users", admin.id).password_hash, PASSWORD)
    assert len(store.rows("users")) == 1


async def test_ensure_admin_refuses_a_non_admin_holding_the_name(
    accounts: AccountService,
) -> None:
    await accounts.create_user("admin", PASSWORD, Role.VIEWER)
    with pytest.raises(Conflict):
        await accounts.ensure_admin(PASSWORD)
