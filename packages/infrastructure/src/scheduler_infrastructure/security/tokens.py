"""JWT access and refresh tokens behind the application's TokenCodec port (PyJWT, HS256 only).

The algorithm is pinned on both sides: tokens are signed with HS256 and ``decode`` accepts
nothing else, so ``alg: none`` and algorithm-confusion tokens are refused. Every standard claim
the scheduler relies on is *required*, not merely checked when present.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import jwt

from scheduler_application.errors import AuthenticationFailed
from scheduler_application.ports.clock import Clock

logger = logging.getLogger("scheduler.api.tokens")

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ")
#: Set by the codec; callers' claims cannot override them.
_RESERVED = frozenset({"exp", "iat", "nbf", "iss", "aud", "jti", "typ"})


class JwtTokenCodec:
    def __init__(
        self,
        *,
        secret: str,
        issuer: str,
        audience: str,
        clock: Clock,
        leeway: timedelta = timedelta(seconds=5),
    ) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes long")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._leeway = leeway

    def encode(self, claims: Mapping[str, Any], *, token_type: str, ttl: timedelta) -> str:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        now = int(self._clock.now().timestamp())
        payload = {key: value for key, value in claims.items() if key not in _RESERVED}
        payload.update(
            iss=self._issuer,
            aud=self._audience,
            iat=now,
            nbf=now,
            exp=now + int(ttl.total_seconds()),
            jti=secrets.token_urlsafe(16),
            typ=token_type,
        )
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str, *, token_type: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except jwt.PyJWTError as error:
            logger.info("refused a token: %s", type(error).__name__)
            raise AuthenticationFailed("the token is invalid or expired") from None
        if claims.get("typ") != token_type:
            logger.info(
                "refused a %r token where a %r token was expected", claims.get("typ"), token_type
            )
            raise AuthenticationFailed("the token is invalid or expired")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthenticationFailed("the token is invalid or expired")
        return claims
