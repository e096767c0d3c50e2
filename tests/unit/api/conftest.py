"""Unit fixtures for the API's use cases: in-memory ports, a hand-moved clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler_application.accounts.api_keys import ApiKeyService
from scheduler_application.accounts.auth import AuthService
from scheduler_application.accounts.user_admin import UserAdminService
from scheduler_application.testing import (
    FakeClock,
    FakePasswordHasher,
    FakeTokenCodec,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)

START = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def uow_factory(store: InMemoryStore) -> InMemoryUnitOfWorkFactory:
    return InMemoryUnitOfWorkFactory(store)


@pytest.fixture
def hasher() -> FakePasswordHasher:
    return FakePasswordHasher()


@pytest.fixture
def codec(clock: FakeClock) -> FakeTokenCodec:
    return FakeTokenCodec(clock)


@pytest.fixture
def auth(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    hasher: FakePasswordHasher,
    codec: FakeTokenCodec,
) -> AuthService:
    return AuthService(uow_factory=uow_factory, clock=clock, hasher=hasher, codec=codec)


@pytest.fixture
def keys(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> ApiKeyService:
    return ApiKeyService(uow_factory=uow_factory, clock=clock)


@pytest.fixture
def users(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, hasher: FakePasswordHasher
) -> UserAdminService:
    return UserAdminService(uow_factory=uow_factory, clock=clock, hasher=hasher)
