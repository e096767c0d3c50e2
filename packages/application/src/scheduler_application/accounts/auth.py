"""Authentication use cases: log in, rotate refresh tokens, log out, change one's own password,
and turn a presented credential (access token or API key) into a :class:`Principal`.

* Access tokens are short-lived JWTs (``typ`` ``access``) naming the user in ``sub`` and the
  user's *token generation* in ``gen``. The user is loaded (or the answer taken from the
  ``PrincipalCache``, which every change below invalidates) and a token whose generation is
  not the user's current one is refused. Logout, a password change or reset, disabling the
  user and a role change raise the generation, so every access token issued before stops
  working at once — and stays refused after the user is enabled again.
* Usernames are compared in their canonical, lower-cased form: ``Alice`` logs into ``alice``.
* Refresh tokens are JWTs too (``typ`` ``refresh``) and are additionally stored, hashed, as one
  link of a *family*. Each refresh spends its link and issues the next one. Presenting a spent
  (or revoked) link means it was copied: the whole family is revoked, the thief's copy and the
  owner's alike.
* Every failure answers with the same :class:`AuthenticationFailed` message, and an unknown user
  costs a password verification like a known one, so neither the answer nor its timing tells
  which usernames exist.
* Changing one's own password needs the current one; it ends every session of the user (access
  tokens by generation, refresh tokens revoked) and returns a fresh pair for the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.api_keys import (
    API_KEY_PREFIX,
    digest_matches,
    key_digest,
    may_grant,
    parse_key_prefix,
)
from scheduler_application.accounts.principal_cache import PrincipalCache, credential_digest
from scheduler_application.errors import AuthenticationFailed, NotFound, PermissionDenied
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.security import PasswordHasher, TokenCodec
from scheduler_application.ports.unit_of_work import (
    ReadUnitOfWorkFactory,
    UnitOfWork,
    UnitOfWorkFactory,
)
from scheduler_domain.accounts import (
    RefreshToken,
    User,
    canonical_username,
    validate_password,
)
from scheduler_domain.errors import ValidationError
from scheduler_domain.ids import new_id

logger = logging.getLogger("scheduler.auth")

ACCESS = "access"
REFRESH = "refresh"
#: The one answer to a failed login, whatever the reason.
LOGIN_FAILED = "invalid username or password"
#: The one answer to a refused credential, whatever the reason.
CREDENTIAL_REFUSED = "the credentials are invalid, expired or revoked"
MISSING_CREDENTIALS = "authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key'"
#: The one answer to a wrong current password on a password change.
CURRENT_PASSWORD_WRONG = "the current password is wrong"  # noqa: S105 - a message
MAX_PASSWORD_CHARS = 1024
#: The longest token looked at (longer ones are refused unread).
MAX_TOKEN_CHARS = 8192
#: ``last_used_at`` of an API key is written at most this often (not on every request).
KEY_USE_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPolicy:
    access_ttl: timedelta = timedelta(minutes=15)
    refresh_ttl: timedelta = timedelta(days=14)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    user: User


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        hasher: PasswordHasher,
        codec: TokenCodec,
        policy: SessionPolicy | None = None,
        max_parallel_hashes: int = 4,
        read_uow_factory: ReadUnitOfWorkFactory | None = None,
        principal_cache: PrincipalCache | None = None,
    ) -> None:
        """``principal_cache`` (default: none, every credential is checked in the database)
        answers for credentials accepted a moment ago; the session changes made here
        invalidate it. Credentials are looked up through ``read_uow_factory``."""
        self._uow_factory = uow_factory
        self._reads = read_uow_factory or uow_factory
        self._cache = (
            principal_cache if principal_cache is not None else PrincipalCache(ttl=timedelta(0))
        )
        self._clock = clock
        self._hasher = hasher
        self._codec = codec
        self._policy = policy or SessionPolicy()
        self._dummy_hash: str | None = None
        #: Memory-hard hashes are expensive; a login flood queues here instead of exhausting RAM.
        self._hash_slots = asyncio.Semaphore(max_parallel_hashes)

    async def warm_up(self) -> None:
        """Compute the stand-in hash for unknown users now, not during the first login."""
        await self._dummy()

    # -- sessions --------------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> TokenPair:
        if not isinstance(username, str) or not isinstance(password, str):
            raise AuthenticationFailed(LOGIN_FAILED)
        password = password[: MAX_PASSWORD_CHARS + 1]
        async with self._uow_factory() as uow:
            user = await uow.users.get_by_username(canonical_username(username[:256]))
        stored_hash = user.password_hash if user is not None else await self._dummy()
        async with self._hash_slots:
            matched = await asyncio.to_thread(self._hasher.verify, stored_hash, password)
        if user is None or not matched or user.disabled or len(password) > MAX_PASSWORD_CHARS:
            raise AuthenticationFailed(LOGIN_FAILED)
        await self._upgrade_hash(user, password)
        async with self._uow_factory() as uow:
            current = await uow.users.get(user.id)
            if (
                current is None
                or current.disabled
                or current.token_generation != user.token_generation
            ):
                # Reset, disabled or logged out while the password was being checked.
                raise AuthenticationFailed(LOGIN_FAILED)
            pair = await self._issue(uow, current, family_id=new_id())
            await uow.commit()
        return pair

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Spend ``refresh_token`` and return the next pair of its family."""
        claims = self._decode(refresh_token, REFRESH)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            stored = await uow.refresh_tokens.get_by_hash(token_digest(refresh_token))
            if stored is None or stored.user_id != claims["sub"]:
                raise AuthenticationFailed(CREDENTIAL_REFUSED)
            user = await uow.users.get(stored.user_id)
            refused = await self._spend(uow, stored, user, now)
            pair = None
            if refused is None and user is not None:
                pair = await self._issue(uow, user, family_id=stored.family_id)
            await uow.commit()
        if pair is None:
            logger.warning("refresh refused (%s); family %s revoked", refused, stored.family_id)
            raise AuthenticationFailed(CREDENTIAL_REFUSED)
        return pair

    async def logout(self, refresh_token: str) -> None:
        """Revoke the family of ``refresh_token`` (neither it nor any later link refreshes) and
        end the user's access tokens. The user's other refresh families survive: their next
        refresh issues an access token of the new generation."""
        claims = self._decode(refresh_token, REFRESH)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            stored = await uow.refresh_tokens.get_by_hash(token_digest(refresh_token))
            if stored is None or stored.user_id != claims.get("sub"):
                return
            await uow.refresh_tokens.revoke_family(stored.family_id, now=now)
            with contextlib.suppress(NotFound):  # a user who is gone has no tokens to end
                await uow.users.bump_token_generation(stored.user_id)
            await uow.commit()
        self._cache.invalidate()

    async def change_password(
        self, principal: Principal, current_password: str, new_password: str
    ) -> TokenPair:
        """The caller's own password: PermissionDenied (field ``current_password``) unless
        ``current_password`` is right; ValidationError (field ``new_password``) for a weak new
        one. Ends every session of the user and returns a new pair for the caller."""
        if not isinstance(current_password, str) or not isinstance(new_password, str):
            raise PermissionDenied(CURRENT_PASSWORD_WRONG, field="current_password")
        validate_new_password(new_password)
        async with self._uow_factory() as uow:
            user = await uow.users.get(principal.subject_id)
        if user is None or user.disabled:
            raise AuthenticationFailed(CREDENTIAL_REFUSED)
        candidate = current_password[: MAX_PASSWORD_CHARS + 1]
        async with self._hash_slots:
            matched = await asyncio.to_thread(self._hasher.verify, user.password_hash, candidate)
            new_hash = await asyncio.to_thread(self._hasher.hash, new_password) if matched else None
        if new_hash is None or len(candidate) > MAX_PASSWORD_CHARS:
            raise PermissionDenied(CURRENT_PASSWORD_WRONG, field="current_password")
        now = self._clock.now()
        async with self._uow_factory() as uow:
            current = await uow.users.get(user.id)
            if current is None or current.password_hash != user.password_hash:
                # Changed or reset meanwhile: the password just checked is not current any more.
                raise PermissionDenied(CURRENT_PASSWORD_WRONG, field="current_password")
            current.password_hash = new_hash
            current.updated_at = now
            await uow.users.update(current)
            current.token_generation = await uow.users.bump_token_generation(current.id)
            await uow.refresh_tokens.revoke_for_user(current.id, now=now)
            pair = await self._issue(uow, current, family_id=new_id())
            await uow.commit()
        self._cache.invalidate()
        logger.info("user %s changed their password; their other sessions ended", current.id)
        return pair

    # -- credentials -----------------------------------------------------------------------------

    async def authenticate(
        self, *, authorization: str | None = None, api_key: str | None = None
    ) -> Principal:
        """The caller behind an ``Authorization`` header (a bearer access token or API key) or
        an ``X-API-Key`` header; ``Authorization`` wins when both are sent."""
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            token = value.strip()
            if scheme.lower() != "bearer" or not token:
                raise AuthenticationFailed(CREDENTIAL_REFUSED)
            if token.startswith(API_KEY_PREFIX):
                return await self._by_api_key(token)
            return await self._by_access_token(token)
        if api_key is not None:
            return await self._by_api_key(api_key.strip())
        raise AuthenticationFailed(MISSING_CREDENTIALS)

    async def _by_access_token(self, token: str) -> Principal:
        now = self._clock.now()
        digest = credential_digest(token) if len(token) <= MAX_TOKEN_CHARS else ""
        cached = self._cache.get(digest, now=now)
        if cached is not None:
            return cached
        if not digest:
            return await self._read_access_token(token, digest)
        return await self._cache.shared(digest, lambda: self._read_access_token(token, digest))

    async def _read_access_token(self, token: str, digest: str) -> Principal:
        epoch = self._cache.epoch
        claims = self._decode(token, ACCESS)
        generation = claims.get("gen")
        subject = claims.get("sub")
        expiry = claims.get("exp")
        if type(generation) is not int or not isinstance(subject, str):
            raise AuthenticationFailed(CREDENTIAL_REFUSED)
        async with self._reads() as uow:
            user = await uow.users.get(subject)
            if user is None or user.disabled or user.token_generation != generation:
                raise AuthenticationFailed(CREDENTIAL_REFUSED)
            teams = await uow.teams.roles_of(user.id)
        principal = Principal(subject_id=user.id, role=user.role, via="user", teams=teams)
        if isinstance(expiry, int | float):
            expires_at = datetime.fromtimestamp(expiry, tz=UTC)
            self._cache.put(digest, principal, expires_at=expires_at, epoch=epoch)
        return principal

    async def _by_api_key(self, key: str) -> Principal:
        now = self._clock.now()
        digest = key_digest(key)
        cached = self._cache.get(digest, now=now)
        if cached is not None:
            return cached
        return await self._cache.shared(digest, lambda: self._read_api_key(key, digest, now))

    async def _read_api_key(self, key: str, digest: str, now: datetime) -> Principal:
        epoch = self._cache.epoch
        prefix = parse_key_prefix(key)
        async with self._reads() as uow:
            stored = await uow.api_keys.get_by_prefix(prefix) if prefix is not None else None
            if not digest_matches(key, stored) or stored is None or not stored.is_usable(now):
                raise AuthenticationFailed(CREDENTIAL_REFUSED)
            owner = await uow.users.get(stored.owner_id)
            if owner is None or owner.disabled or not may_grant(owner.role, stored.role):
                raise AuthenticationFailed(CREDENTIAL_REFUSED)
            teams = await uow.teams.roles_of(owner.id)
        last = stored.last_used_at
        if last is None or now - last >= KEY_USE_RESOLUTION:
            async with self._uow_factory() as uow:
                await uow.api_keys.touch(stored.id, now=now)
                await uow.commit()
        principal = Principal(
            subject_id=owner.id, role=stored.role, via="api_key", key_id=stored.id, teams=teams
        )
        self._cache.put(digest, principal, expires_at=stored.expires_at, epoch=epoch)
        return principal

    # -- helpers ---------------------------------------------------------------------------------

    def _decode(self, token: str, token_type: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed(CREDENTIAL_REFUSED)
        try:
            return self._codec.decode(token, token_type=token_type)
        except AuthenticationFailed:
            raise AuthenticationFailed(CREDENTIAL_REFUSED) from None

    async def _spend(
        self, uow: UnitOfWork, stored: RefreshToken, user: User | None, now: datetime
    ) -> str | None:
        """Mark the link used; on any defect revoke its family and say why (None: spent fine)."""
        reason: str | None = None
        if stored.used_at is not None or stored.revoked_at is not None:
            reason = "reuse of a spent or revoked refresh token"
        elif stored.expires_at <= now:
            reason = "expired refresh token"
        elif user is None or user.disabled:
            reason = "the user is gone or disabled"
        elif not await uow.refresh_tokens.mark_used(stored.id, now=now):
            reason = "concurrent reuse of a refresh token"
        if reason is not None:
            await uow.refresh_tokens.revoke_family(stored.family_id, now=now)
        return reason

    async def _issue(self, uow: UnitOfWork, user: User, *, family_id: str) -> TokenPair:
        policy = self._policy
        now = self._clock.now()
        access = self._codec.encode(
            {
                "sub": user.id,
                "role": user.role.value,
                "sid": family_id,
                "gen": user.token_generation,
            },
            token_type=ACCESS,
            ttl=policy.access_ttl,
        )
        link_id = new_id()
        refresh = self._codec.encode(
            {"sub": user.id, "fam": family_id, "rid": link_id},
            token_type=REFRESH,
            ttl=policy.refresh_ttl,
        )
        await uow.refresh_tokens.add(
            RefreshToken(
                id=link_id,
                user_id=user.id,
                family_id=family_id,
                token_hash=token_digest(refresh),
                created_at=now,
                expires_at=now + policy.refresh_ttl,
            )
        )
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            expires_in=int(policy.access_ttl.total_seconds()),
            refresh_expires_in=int(policy.refresh_ttl.total_seconds()),
            user=user,
        )

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, secrets.token_hex(16))
        return self._dummy_hash

    async def _upgrade_hash(self, user: User, password: str) -> None:
        """Re-hash with the current parameters after a successful login (best effort)."""
        if not self._hasher.needs_rehash(user.password_hash):
            return
        async with self._hash_slots:
            new_hash = await asyncio.to_thread(self._hasher.hash, password)
        async with self._uow_factory() as uow:
            current = await uow.users.get(user.id)
            if current is None or current.password_hash != user.password_hash:
                return
            current.password_hash = new_hash
            current.updated_at = self._clock.now()
            await uow.users.update(current)
            await uow.commit()


def validate_new_password(password: str) -> str:
    """:func:`validate_password`, naming the field ``new_password``."""
    try:
        return validate_password(password)
    except ValidationError as error:
        raise ValidationError(error.message, field="new_password") from None
