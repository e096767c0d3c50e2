"""Argon2id password hashing behind the application's PasswordHasher port."""

from __future__ import annotations

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Argon2PasswordHasher:
    """argon2-cffi with its RFC 9106 low-memory defaults; parameters can be raised per deployment
    and old hashes are upgraded on the next successful login via ``needs_rehash``."""

    def __init__(
        self, *, time_cost: int = 3, memory_cost: int = 65_536, parallelism: int = 4
    ) -> None:
        self._argon2 = _Argon2(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )

    def hash(self, password: str) -> str:
        return self._argon2.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
