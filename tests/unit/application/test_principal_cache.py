"""The cache of accepted credentials: bounded, short-lived, never holding a refused credential,
and forgotten at once by every session rule of the process that applies it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest
from application_fixtures import START, Gated, until

import scheduler_application.accounts.api_keys as api_keys_module
from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.api_keys import ApiKeyService
from scheduler_application.accounts.auth import AuthService
from scheduler_application.accounts.principal_cache import PrincipalCache, credential_digest
from scheduler_application.accounts.user_admin import UserAdminService
from scheduler_application.errors import AuthenticationFailed
from scheduler_application.testing import (
    FakeClock,
    FakePasswordHasher,
    FakeTokenCodec,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role, User

PASSWORD = "correct horse battery staple"
ALICE = Principal(subject_id="alice-id", role=Role.USER)


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the cache on its own -------------------------------------------------------------------


def test_the_cache_never_holds_more_than_its_size_dropping_the_least_recently_used() -> None:
    cache = PrincipalCache(max_entries=3)
    for n in range(3):
        cache.put(f"d{n}", ALICE, expires_at=None, epoch=cache.epoch)
    assert cache.get("d0", now=START) is ALICE  # d0 is now the most recently used
    for n in range(3, 10):
        cache.put(f"d{n}", ALICE, expires_at=None, epoch=cache.epoch)
        assert len(cache) <= 3
    assert cache.get("d1", now=START) is None
    assert cache.get("d9", now=START) is ALICE


def test_entries_end_with_the_time_to_live_and_with_the_credential() -> None:
    ticker = Ticker()
    cache = PrincipalCache(ttl=timedelta(seconds=5), monotonic=ticker)
    cache.put("short", ALICE, expires_at=START + timedelta(seconds=1), epoch=cache.epoch)
    cache.put("long", ALICE, expires_at=None, epoch=cache.epoch)
    assert cache.get("short", now=START) is ALICE
    assert cache.get("short", now=START + timedelta(seconds=1)) is None
    ticker.now += 4.9
    assert cache.get("long", now=START) is ALICE
    ticker.now += 0.2
    assert cache.get("long", now=START) is None


def test_an_answer_read_before_an_invalidation_is_not_stored_after_it() -> None:
    cache = PrincipalCache()
    epoch = cache.epoch  # a lookup starts reading the database…
    cache.invalidate()  # …a revocation lands meanwhile…
    cache.put("d", ALICE, expires_at=None, epoch=epoch)  # …its stale answer is dropped
    assert cache.get("d", now=START) is None
    cache.put("d", ALICE, expires_at=None, epoch=cache.epoch)
    assert cache.get("d", now=START) is ALICE


def test_a_suspended_cache_serves_and_stores_nothing_until_reset() -> None:
    cache = PrincipalCache(live=False)
    cache.put("d", ALICE, expires_at=None, epoch=cache.epoch)
    assert cache.get("d", now=START) is None
    cache.reset()
    cache.put("d", ALICE, expires_at=None, epoch=cache.epoch)
    assert cache.get("d", now=START) is ALICE
    cache.suspend()
    assert cache.get("d", now=START) is None
    cache.reset()
    assert cache.get("d", now=START) is None  # everything was forgotten


@pytest.mark.parametrize("options", [{"max_entries": 0}, {"ttl": timedelta(0)}])
def test_size_or_time_to_live_zero_turns_caching_off(options: dict[str, object]) -> None:
    cache = PrincipalCache(**options)  # type: ignore[arg-type]
    cache.put("d", ALICE, expires_at=None, epoch=cache.epoch)
    assert cache.get("d", now=START) is None


# -- the cache in authentication ------------------------------------------------------------


class Counting(InMemoryUnitOfWorkFactory):
    """Counts the units of work opened (each one a trip to the database)."""

    def __init__(self, store: InMemoryStore) -> None:
        super().__init__(store)
        self.opened = 0

    def __call__(self):  # type: ignore[no-untyped-def]
        self.opened += 1
        return super().__call__()


@dataclass
class World:
    auth: AuthService
    keys: ApiKeyService
    users: UserAdminService
    cache: PrincipalCache
    uow: Counting
    clock: FakeClock


@pytest.fixture
def world(store: InMemoryStore) -> World:
    clock = FakeClock(START)
    hasher = FakePasswordHasher()
    cache = PrincipalCache()
    uow = Counting(store)
    auth = AuthService(
        uow_factory=uow,
        clock=clock,
        hasher=hasher,
        codec=FakeTokenCodec(clock),
        principal_cache=cache,
    )
    keys = ApiKeyService(uow_factory=uow, clock=clock, principal_cache=cache)
    users = UserAdminService(uow_factory=uow, clock=clock, hasher=hasher, principal_cache=cache)
    return World(auth=auth, keys=keys, users=users, cache=cache, uow=uow, clock=clock)


async def _alice(store: InMemoryStore, role: Role = Role.USER) -> User:
    user = User(
        username="alice",
        password_hash=FakePasswordHasher().hash(PASSWORD),
        role=role,
        created_at=START,
        updated_at=START,
    )
    async with InMemoryUnitOfWorkFactory(store)() as uow:
        await uow.users.add(user)
        await uow.commit()
    return user


async def test_a_known_key_is_answered_from_memory_after_its_first_use(
    world: World, store: InMemoryStore
) -> None:
    auth, keys, uow = world.auth, world.keys, world.uow
    alice = await _alice(store)
    issued = await keys.issue(principal=Principal(alice.id, Role.USER), name="ci")
    first = await auth.authenticate(api_key=issued.secret)
    opened = uow.opened
    for _ in range(5):
        assert await auth.authenticate(api_key=issued.secret) == first
    assert uow.opened == opened


async def test_a_wrong_key_is_never_remembered_and_never_matches_a_remembered_one(
    world: World, store: InMemoryStore
) -> None:
    auth, keys, cache = world.auth, world.keys, world.cache
    alice = await _alice(store)
    issued = await keys.issue(principal=Principal(alice.id, Role.USER), name="ci")
    await auth.authenticate(api_key=issued.secret)  # the right key is remembered
    remembered = len(cache)
    # Same prefix, another secret: a different digest, so the database decides — and refuses.
    wrong = issued.secret[:-4] + ("AAAA" if not issued.secret.endswith("AAAA") else "BBBB")
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate(api_key=wrong)
    assert len(cache) == remembered
    assert cache.get(credential_digest(wrong), now=START) is None


async def test_a_missed_key_is_still_compared_in_constant_time(
    world: World, store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, keys = world.auth, world.keys
    compared: list[tuple[str, str]] = []
    real = api_keys_module.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_keys_module.hmac, "compare_digest", spy)
    alice = await _alice(store)
    issued = await keys.issue(principal=Principal(alice.id, Role.USER), name="ci")
    unknown_prefix = "sk_zzzzzzzzzzzz_" + issued.secret.rsplit("_", 1)[1]
    for key in (issued.secret[:-1] + "x", unknown_prefix):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate(api_key=key)
    assert len(compared) == 2  # a hit on the prefix and a miss cost the same comparison


async def test_revoking_a_key_refuses_it_on_the_next_request(
    world: World, store: InMemoryStore
) -> None:
    auth, keys = world.auth, world.keys
    alice = await _alice(store)
    owner = Principal(alice.id, Role.USER)
    issued = await keys.issue(principal=owner, name="ci")
    await auth.authenticate(api_key=issued.secret)
    await keys.revoke(issued.key.id, principal=owner)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(api_key=issued.secret)


async def test_a_role_change_and_a_logout_refuse_remembered_access_tokens_at_once(
    world: World, store: InMemoryStore
) -> None:
    auth, users = world.auth, world.users
    alice = await _alice(store)
    admin = Principal("root", Role.ADMIN)
    pair = await auth.login("alice", PASSWORD)
    bearer = f"Bearer {pair.access_token}"
    assert (await auth.authenticate(authorization=bearer)).role is Role.USER
    await users.update(alice.id, principal=admin, role=Role.VIEWER)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(authorization=bearer)

    pair = await auth.login("alice", PASSWORD)
    bearer = f"Bearer {pair.access_token}"
    assert (await auth.authenticate(authorization=bearer)).role is Role.VIEWER
    await auth.logout(pair.refresh_token)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(authorization=bearer)


async def test_an_expired_access_token_is_refused_even_when_remembered(
    world: World, store: InMemoryStore
) -> None:
    auth, clock = world.auth, world.clock
    await _alice(store)
    pair = await auth.login("alice", PASSWORD)
    bearer = f"Bearer {pair.access_token}"
    await auth.authenticate(authorization=bearer)
    clock.advance(seconds=pair.expires_in + 1)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(authorization=bearer)


# -- concurrent misses share one read -------------------------------------------------------


def _gated_auth(
    store: InMemoryStore, cache: PrincipalCache
) -> tuple[AuthService, ApiKeyService, Gated]:
    """Authentication whose credential reads wait at a gate, and the keys service beside it."""
    clock = FakeClock(START)
    reads = Gated(store)
    auth = AuthService(
        uow_factory=InMemoryUnitOfWorkFactory(store),
        read_uow_factory=reads,
        clock=clock,
        hasher=FakePasswordHasher(),
        codec=FakeTokenCodec(clock),
        principal_cache=cache,
    )
    keys = ApiKeyService(
        uow_factory=InMemoryUnitOfWorkFactory(store), clock=clock, principal_cache=cache
    )
    return auth, keys, reads


@pytest.fixture
def gated(store: InMemoryStore) -> tuple[AuthService, ApiKeyService, PrincipalCache, Gated]:
    cache = PrincipalCache()
    auth, keys, reads = _gated_auth(store, cache)
    return auth, keys, cache, reads


async def test_sixteen_requests_missing_one_key_at_once_make_one_read(
    gated: tuple[AuthService, ApiKeyService, PrincipalCache, Gated], store: InMemoryStore
) -> None:
    auth, keys, _, reads = gated
    alice = await _alice(store)
    issued = await keys.issue(principal=Principal(alice.id, Role.USER), name="ci")
    wrong = issued.secret[:-4] + ("AAAA" if not issued.secret.endswith("AAAA") else "BBBB")
    right = [asyncio.create_task(auth.authenticate(api_key=issued.secret)) for _ in range(16)]
    refused = [asyncio.create_task(auth.authenticate(api_key=wrong)) for _ in range(4)]
    await until(lambda: reads.begun >= 2)
    reads.gate.set()
    principals = await asyncio.gather(*right)
    assert {p.subject_id for p in principals} == {alice.id}
    for task in refused:  # a refusal is shared too, and stays a refusal
        with pytest.raises(AuthenticationFailed):
            await task
    assert reads.begun == 2  # one read for the right key, one for the wrong one


async def test_a_caller_after_an_invalidation_does_not_take_the_read_begun_before_it(
    gated: tuple[AuthService, ApiKeyService, PrincipalCache, Gated], store: InMemoryStore
) -> None:
    auth, keys, _, reads = gated
    alice = await _alice(store)
    owner = Principal(alice.id, Role.USER)
    issued = await keys.issue(principal=owner, name="ci")
    before = asyncio.create_task(auth.authenticate(api_key=issued.secret))
    await until(lambda: reads.begun == 1)
    await keys.revoke(issued.key.id, principal=owner)  # invalidates the cache: a new epoch
    after = asyncio.create_task(auth.authenticate(api_key=issued.secret))
    await until(lambda: reads.begun == 2)  # its own read, not the one under way
    reads.gate.set()
    with pytest.raises(AuthenticationFailed):
        await after
    await asyncio.gather(before, return_exceptions=True)  # raced the revocation: either answer


async def test_a_cancelled_request_does_not_fail_the_ones_sharing_its_read(
    gated: tuple[AuthService, ApiKeyService, PrincipalCache, Gated], store: InMemoryStore
) -> None:
    auth, keys, cache, reads = gated
    alice = await _alice(store)
    issued = await keys.issue(principal=Principal(alice.id, Role.USER), name="ci")
    first = asyncio.create_task(auth.authenticate(api_key=issued.secret))
    await until(lambda: reads.begun == 1)
    second = asyncio.create_task(auth.authenticate(api_key=issued.secret))
    await asyncio.sleep(0)
    first.cancel()
    reads.gate.set()
    assert (await second).subject_id == alice.id
    with pytest.raises(asyncio.CancelledError):
        await first
    assert reads.begun == 1
    assert cache.get(credential_digest(issued.secret), now=START) is not None


async def test_without_a_live_cache_every_request_reads_for_itself(store: InMemoryStore) -> None:
    # Suspended: no invalidations heard.
    auth, keys, reads = _gated_auth(store, PrincipalCache(live=False))
    alice = await _alice(store)
    issued = await keys.issue(principal=Principal(alice.id, Role.USER), name="ci")
    calls = [asyncio.create_task(auth.authenticate(api_key=issued.secret)) for _ in range(3)]
    await until(lambda: reads.begun == 3)
    reads.gate.set()
    await asyncio.gather(*calls)
