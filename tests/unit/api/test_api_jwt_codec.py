"""The JWT adapter: HS256 only, every standard claim required, the token type enforced."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from scheduler_application.errors import AuthenticationFailed
from scheduler_application.testing import FakeClock
from scheduler_infrastructure.security.tokens import REQUIRED_CLAIMS, JwtTokenCodec

SECRET = "k" * 40


def codec(clock: FakeClock | None = None) -> JwtTokenCodec:
    return JwtTokenCodec(
        secret=SECRET,
        issuer="scheduler",
        audience="scheduler-api",
        clock=clock or FakeClock(datetime.now(UTC)),
    )


def test_round_trip_adds_the_standard_claims() -> None:
    token = codec().encode(
        {"sub": "u1", "role": "user"}, token_type="access", ttl=timedelta(minutes=5)
    )

    claims = codec().decode(token, token_type="access")

    assert set(REQUIRED_CLAIMS) <= set(claims)
    assert claims["sub"] == "u1"
    assert claims["typ"] == "access"
    assert claims["exp"] - claims["iat"] == 300
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_callers_cannot_override_reserved_claims() -> None:
    token = codec().encode(
        {"sub": "u1", "exp": 9_999_999_999, "typ": "access", "aud": "x"},
        token_type="refresh",
        ttl=timedelta(minutes=5),
    )

    claims = codec().decode(token, token_type="refresh")

    assert claims["typ"] == "refresh"
    assert claims["aud"] == "scheduler-api"
    assert claims["exp"] < 9_999_999_999


def test_the_token_type_is_enforced() -> None:
    token = codec().encode({"sub": "u1"}, token_type="refresh", ttl=timedelta(minutes=5))

    with pytest.raises(AuthenticationFailed):
        codec().decode(token, token_type="access")


def test_expired_tokens_are_refused() -> None:
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    token = codec(clock).encode({"sub": "u1"}, token_type="access", ttl=timedelta(minutes=5))

    with pytest.raises(AuthenticationFailed):
        codec().decode(token, token_type="access")


@pytest.mark.parametrize("missing", REQUIRED_CLAIMS)
def test_every_standard_claim_is_required(missing: str) -> None:
    now = int(time.time())
    claims = {
        "sub": "u1", "iss": "scheduler", "aud": "scheduler-api", "iat": now, "nbf": now,
        "exp": now + 60, "jti": "j", "typ": "access",
    }  # fmt: skip
    del claims[missing]

    with pytest.raises(AuthenticationFailed):
        codec().decode(jwt.encode(claims, SECRET, algorithm="HS256"), token_type="access")


def test_unsigned_tokens_are_refused() -> None:
    now = int(time.time())
    claims = {
        "sub": "u1", "iss": "scheduler", "aud": "scheduler-api", "iat": now, "nbf": now,
        "exp": now + 60, "jti": "j", "typ": "access",
    }  # fmt: skip
    token = jwt.encode(claims, None, algorithm="none")

    with pytest.raises(AuthenticationFailed):
        codec().decode(token, token_type="access")


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JwtTokenCodec(secret="short", issuer="i", audience="a", clock=FakeClock())
