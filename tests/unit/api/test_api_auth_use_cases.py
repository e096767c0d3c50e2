"""Login, refresh rotation with reuse detection, logout and credential resolution, on fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler_application.accounts.access import SYSTEM, Principal
from scheduler_application.accounts.api_keys import ApiKeyService
from scheduler_application.accounts.auth import (
    CREDENTIAL_REFUSED,
    LOGIN_FAILED,
    AuthService,
    token_digest,
)
from scheduler_application.accounts.user_admin import UserAdminService
from scheduler_application.errors import AuthenticationFailed
from scheduler_application.testing import (
    FakeClock,
    FakePasswordHasher,
    InMemoryStore,
)
from scheduler_domain.accounts import Role, User

PASSWORD = "a long enough password"


async def make_user(users: UserAdminService, name: str = "alice", role: Role = Role.USER) -> User:
    return await users.create(name, PASSWORD, role, principal=SYSTEM)


async def test_login_issues_a_pair_and_stores_the_refresh_token_hashed(
    auth: AuthService, users: UserAdminService, store: InMemoryStore
) -> None:
    user = await make_user(users)

    pair = await auth.login("alice", PASSWORD)

    (stored,) = store.rows("refresh_tokens")
    assert stored.user_id == user.id
    assert stored.token_hash != pair.refresh_token
    assert pair.refresh_token not in repr(store.rows("refresh_tokens"))
    principal = await auth.authenticate(authorization=f"Bearer {pair.access_token}")
    assert principal == Principal(subject_id=user.id, role=Role.USER, via="user")


async def test_unknown_user_costs_a_verification_like_a_wrong_password(
    auth: AuthService, users: UserAdminService, hasher: FakePasswordHasher
) -> None:
    await make_user(users)
    await auth.warm_up()
    before = hasher.verified

    with pytest.raises(AuthenticationFailed) as unknown:
        await auth.login("nobody", PASSWORD)
    with pytest.raises(AuthenticationFailed) as wrong:
        await auth.login("alice", "not the password")

    assert hasher.verified - before == 2
    assert unknown.value.message == wrong.value.message == LOGIN_FAILED


async def test_disabled_user_cannot_log_in_or_use_tokens(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users)
    pair = await auth.login("alice", PASSWORD)

    await users.update(user.id, principal=SYSTEM, disabled=True)

    with pytest.raises(AuthenticationFailed):
        await auth.login("alice", PASSWORD)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(authorization=f"Bearer {pair.access_token}")
    with pytest.raises(AuthenticationFailed):
        await auth.refresh(pair.refresh_token)


async def test_refresh_rotates_within_the_family(
    auth: AuthService, users: UserAdminService, store: InMemoryStore
) -> None:
    await make_user(users)
    first = await auth.login("alice", PASSWORD)

    second = await auth.refresh(first.refresh_token)

    tokens = store.rows("refresh_tokens")
    assert len(tokens) == 2
    assert len({t.family_id for t in tokens}) == 1
    (live,) = [t for t in tokens if t.used_at is None]
    assert live.token_hash == token_digest(second.refresh_token)
    assert second.refresh_token != first.refresh_token


async def test_reusing_a_spent_refresh_token_revokes_the_family(
    auth: AuthService, users: UserAdminService, store: InMemoryStore
) -> None:
    await make_user(users)
    first = await auth.login("alice", PASSWORD)
    second = await auth.refresh(first.refresh_token)

    with pytest.raises(AuthenticationFailed) as reuse:
        await auth.refresh(first.refresh_token)

    assert reuse.value.message == CREDENTIAL_REFUSED
    assert all(t.revoked_at is not None for t in store.rows("refresh_tokens"))
    with pytest.raises(AuthenticationFailed):
        await auth.refresh(second.refresh_token)


async def test_other_sessions_survive_a_reuse(auth: AuthService, users: UserAdminService) -> None:
    await make_user(users)
    laptop = await auth.login("alice", PASSWORD)
    phone = await auth.login("alice", PASSWORD)
    await auth.refresh(laptop.refresh_token)

    with pytest.raises(AuthenticationFailed):
        await auth.refresh(laptop.refresh_token)

    assert (await auth.refresh(phone.refresh_token)).access_token


async def test_expired_refresh_token_is_refused(
    auth: AuthService, users: UserAdminService, clock: FakeClock
) -> None:
    await make_user(users)
    pair = await auth.login("alice", PASSWORD)

    clock.advance(timedelta(days=15))

    with pytest.raises(AuthenticationFailed):
        await auth.refresh(pair.refresh_token)


async def test_logout_revokes_the_family(auth: AuthService, users: UserAdminService) -> None:
    await make_user(users)
    pair = await auth.login("alice", PASSWORD)
    rotated = await auth.refresh(pair.refresh_token)

    await auth.logout(rotated.refresh_token)

    with pytest.raises(AuthenticationFailed):
        await auth.refresh(rotated.refresh_token)


async def test_token_types_are_not_interchangeable(
    auth: AuthService, users: UserAdminService
) -> None:
    await make_user(users)
    pair = await auth.login("alice", PASSWORD)

    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(authorization=f"Bearer {pair.refresh_token}")
    with pytest.raises(AuthenticationFailed):
        await auth.refresh(pair.access_token)


async def test_password_reset_ends_every_session(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users)
    pair = await auth.login("alice", PASSWORD)

    await users.reset_password(user.id, "a brand new password", principal=SYSTEM)

    with pytest.raises(AuthenticationFailed):
        await auth.refresh(pair.refresh_token)
    assert (await auth.login("alice", "a brand new password")).access_token


async def test_missing_credentials_are_refused(auth: AuthService) -> None:
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate()
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(authorization="Basic abc")


async def test_api_key_resolves_to_its_owner_with_its_role(
    auth: AuthService, users: UserAdminService, keys: ApiKeyService, clock: FakeClock
) -> None:
    user = await make_user(users, role=Role.OPERATOR)
    owner = Principal(subject_id=user.id, role=Role.OPERATOR)
    issued = await keys.issue(principal=owner, name="ci", role=Role.VIEWER)

    by_header = await auth.authenticate(api_key=issued.secret)
    by_bearer = await auth.authenticate(authorization=f"Bearer {issued.secret}")

    assert by_header == by_bearer == Principal(user.id, Role.VIEWER, via="api_key")
    assert (await keys.get(issued.key.id, principal=owner)).last_used_at == clock.now()


async def test_revoked_expired_and_wrong_keys_are_refused_alike(
    auth: AuthService, users: UserAdminService, keys: ApiKeyService, clock: FakeClock
) -> None:
    user = await make_user(users)
    owner = Principal(subject_id=user.id, role=Role.USER)
    revoked = await keys.issue(principal=owner, name="r")
    await keys.revoke(revoked.key.id, principal=owner)
    expiring = await keys.issue(
        principal=owner, name="e", expires_at=clock.now() + timedelta(hours=1)
    )
    live = await keys.issue(principal=owner, name="l")
    clock.advance(timedelta(hours=2))

    messages = []
    for key in (revoked.secret, expiring.secret, live.secret[:-4] + "AAAA", "sk_nope"):
        with pytest.raises(AuthenticationFailed) as refused:
            await auth.authenticate(api_key=key)
        messages.append(refused.value.message)

    assert set(messages) == {CREDENTIAL_REFUSED}
    assert await auth.authenticate(api_key=live.secret)
