"""Deterministic, *insecure* stand-ins for password hashing and token signing. Tests only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from scheduler_application.errors import AuthenticationFailed
from scheduler_application.ports.clock import Clock

_PREFIX = "fake-sha256$"


class FakePasswordHasher:
    """Unsalted SHA-256: fast and predictable for tests, never for real passwords."""

    def __init__(self) -> None:
        self.hashed = 0
        self.verified = 0

    def hash(self, password: str) -> str:
        self.hashed += 1
        return _PREFIX + hashlib.sha256(password.encode()).hexdigest()

    def verify(self, password_hash: str, password: str) -> bool:
        self.verified += 1
        if not password_hash.startswith(_PREFIX):
            return False
        expected = _PREFIX + hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(expected, password_hash)

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(_PREFIX)


class FakeTokenCodec:
    """HMAC-signed JSON; checks the signature, ``typ`` and ``exp`` (against ``clock``)."""

    def __init__(self, clock: Clock, *, secret: str = "test-secret") -> None:  # noqa: S107
        self._clock = clock
        self._secret = secret.encode()
        self.issued: list[dict[str, Any]] = []

    def encode(self, claims: Mapping[str, Any], *, token_type: str, ttl: timedelta) -> str:
        now = self._clock.now()
        body = {
            **claims,
            "typ": token_type,
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
        }
        self.issued.append(body)
        payload = _b64(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def decode(self, token: str, *, token_type: str) -> dict[str, Any]:
        payload, _, signature = token.partition(".")
        if not signature or not hmac.compare_digest(signature, self._sign(payload)):
            raise AuthenticationFailed("token signature is invalid")
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise AuthenticationFailed("token is malformed") from None
        if not isinstance(claims, dict):
            raise AuthenticationFailed("token is malformed")
        if claims.get("typ") != token_type:
            raise AuthenticationFailed(f"expected a {token_type} token")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= self._clock.now().timestamp():
            raise AuthenticationFailed("token has expired")
        return claims

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
