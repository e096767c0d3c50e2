"""Sessions end when they should: every event that ends a user's sessions refuses the access
tokens issued before it at once (token generations), on the application's fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler_application.accounts.access import SYSTEM, Principal
from scheduler_application.accounts.api_keys import ApiKeyService
from scheduler_application.accounts.auth import (
    CREDENTIAL_REFUSED,
    CURRENT_PASSWORD_WRONG,
    AuthService,
    TokenPair,
)
from scheduler_application.accounts.user_admin import UserAdminService
from scheduler_application.errors import AlreadyExists, AuthenticationFailed, PermissionDenied
from scheduler_application.testing import FakeTokenCodec, InMemoryStore
from scheduler_domain.accounts import Role, User
from scheduler_domain.errors import ValidationError

PASSWORD = "a long enough password"
NEW_PASSWORD = "another long password"


async def make_user(users: UserAdminService, name: str = "alice", role: Role = Role.USER) -> User:
    return await users.create(name, PASSWORD, role, principal=SYSTEM)


async def refused(auth: AuthService, pair: TokenPair) -> bool:
    """Whether the pair's access token is refused (with the uniform answer)."""
    try:
        await auth.authenticate(authorization=f"Bearer {pair.access_token}")
    except AuthenticationFailed as error:
        return error.message == CREDENTIAL_REFUSED
    return False


def as_user(user: User) -> Principal:
    return Principal(subject_id=user.id, role=user.role)


async def test_access_tokens_carry_the_users_generation(
    auth: AuthService, users: UserAdminService, codec: FakeTokenCodec
) -> None:
    await make_user(users)

    await auth.login("alice", PASSWORD)

    assert codec.issued[0]["gen"] == 0


async def test_logout_refuses_the_users_access_tokens_at_once(
    auth: AuthService, users: UserAdminService
) -> None:
    await make_user(users)
    laptop = await auth.login("alice", PASSWORD)
    phone = await auth.login("alice", PASSWORD)

    await auth.logout(laptop.refresh_token)

    assert await refused(auth, laptop)
    assert await refused(auth, phone)
    with pytest.raises(AuthenticationFailed):
        await auth.refresh(laptop.refresh_token)
    # The phone's own refresh family survives and refreshes into the new generation.
    renewed = await auth.refresh(phone.refresh_token)
    assert not await refused(auth, renewed)


async def test_a_role_change_refuses_earlier_access_tokens(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users, role=Role.OPERATOR)
    pair = await auth.login("alice", PASSWORD)

    await users.update(user.id, principal=SYSTEM, role=Role.VIEWER)

    assert await refused(auth, pair)
    renewed = await auth.refresh(pair.refresh_token)
    principal = await auth.authenticate(authorization=f"Bearer {renewed.access_token}")
    assert principal.role is Role.VIEWER


async def test_an_update_that_changes_nothing_keeps_the_sessions(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users)
    pair = await auth.login("alice", PASSWORD)

    await users.update(user.id, principal=SYSTEM, role=Role.USER, disabled=False)

    assert not await refused(auth, pair)


async def test_tokens_stay_refused_after_the_user_is_enabled_again(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users)
    pair = await auth.login("alice", PASSWORD)

    await users.update(user.id, principal=SYSTEM, disabled=True)
    await users.update(user.id, principal=SYSTEM, disabled=False)

    assert await refused(auth, pair)
    with pytest.raises(AuthenticationFailed):
        await auth.refresh(pair.refresh_token)
    assert not await refused(auth, await auth.login("alice", PASSWORD))


async def test_password_reset_refuses_access_tokens_and_revokes_refresh_tokens(
    auth: AuthService, users: UserAdminService, keys: ApiKeyService
) -> None:
    user = await make_user(users)
    pair = await auth.login("alice", PASSWORD)
    key = await keys.issue(principal=as_user(user), name="ci")

    await users.reset_password(user.id, NEW_PASSWORD, principal=SYSTEM)

    assert await refused(auth, pair)
    with pytest.raises(AuthenticationFailed):
        await auth.refresh(pair.refresh_token)
    assert await auth.authenticate(api_key=key.secret)  # kept unless the admin asks


async def test_password_reset_revokes_api_keys_when_asked(
    auth: AuthService, users: UserAdminService, keys: ApiKeyService, store: InMemoryStore
) -> None:
    user = await make_user(users)
    other = await make_user(users, "bob")
    first = await keys.issue(principal=as_user(user), name="ci")
    second = await keys.issue(principal=as_user(user), name="laptop")
    bobs = await keys.issue(principal=as_user(other), name="bob's")

    await users.reset_password(user.id, NEW_PASSWORD, principal=SYSTEM, revoke_api_keys=True)

    for issued in (first, second):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate(api_key=issued.secret)
    assert await auth.authenticate(api_key=bobs.secret)
    assert store.row("api_keys", first.key.id).revoked_at is not None


async def test_changing_ones_password_ends_every_other_session(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users)
    other_device = await auth.login("alice", PASSWORD)
    this_device = await auth.login("alice", PASSWORD)

    fresh = await auth.change_password(as_user(user), PASSWORD, NEW_PASSWORD)

    assert await refused(auth, other_device)
    assert await refused(auth, this_device)
    with pytest.raises(AuthenticationFailed):
        await auth.refresh(other_device.refresh_token)
    assert not await refused(auth, fresh)
    assert await auth.refresh(fresh.refresh_token)
    with pytest.raises(AuthenticationFailed):
        await auth.login("alice", PASSWORD)
    assert await auth.login("alice", NEW_PASSWORD)


async def test_a_wrong_current_password_changes_nothing(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users)
    pair = await auth.login("alice", PASSWORD)

    with pytest.raises(PermissionDenied) as wrong:
        await auth.change_password(as_user(user), "not the password", NEW_PASSWORD)

    assert wrong.value.message == CURRENT_PASSWORD_WRONG
    assert wrong.value.field == "current_password"
    assert not await refused(auth, pair)
    assert await auth.login("alice", PASSWORD)


async def test_a_weak_new_password_is_refused_naming_the_field(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users)

    with pytest.raises(ValidationError) as weak:
        await auth.change_password(as_user(user), PASSWORD, "short")

    assert weak.value.field == "new_password"
    assert await auth.login("alice", PASSWORD)


async def test_usernames_are_stored_lower_cased_and_log_in_in_any_case(
    auth: AuthService, users: UserAdminService
) -> None:
    user = await make_user(users, "Alice")

    pair = await auth.login("ALICE", PASSWORD)

    assert user.username == "alice"
    assert pair.user.id == user.id


async def test_usernames_differing_only_in_case_cannot_coexist(
    users: UserAdminService,
) -> None:
    await make_user(users, "alice")

    with pytest.raises(AlreadyExists) as duplicate:
        await make_user(users, "ALICE")

    assert duplicate.value.field == "username"


async def test_a_look_alike_non_ascii_name_does_not_reach_an_account(
    auth: AuthService, users: UserAdminService
) -> None:
    await make_user(users, "kim")

    with pytest.raises(AuthenticationFailed):
        await auth.login("\u212aim", PASSWORD)  # KELVIN SIGN lowers to an ASCII "k"


async def test_an_access_token_without_a_generation_is_refused(
    auth: AuthService, users: UserAdminService, codec: FakeTokenCodec
) -> None:
    user = await make_user(users)
    legacy = codec.encode(
        {"sub": user.id, "role": "user"}, token_type="access", ttl=timedelta(minutes=5)
    )

    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(authorization=f"Bearer {legacy}")
