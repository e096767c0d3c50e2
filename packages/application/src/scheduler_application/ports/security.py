from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol


class PasswordHasher(Protocol):
    """Slow, salted password hashing (argon2 or scrypt). CPU-bound: callers run it off-loop."""

    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool:
        """True on a match; False on a mismatch or a malformed hash, never an exception."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class TokenCodec(Protocol):
    """Signs and checks access/refresh tokens (JWT). The codec adds and verifies the standard
    claims (``exp``, ``iat``, ``nbf``, ``iss``, ``aud``) and the ``typ`` claim."""

    def encode(self, claims: Mapping[str, Any], *, token_type: str, ttl: timedelta) -> str: ...

    def decode(self, token: str, *, token_type: str) -> dict[str, Any]:
        """The verified claims; raises AuthenticationFailed for any defect."""
        ...
