"""The Standard Webhooks signature, the retry schedule and what is retried."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_domain.errors import ValidationError
from scheduler_domain.webhooks import (
    RetryPolicy,
    check_event_types,
    check_url,
    new_secret,
    parse_retry_after,
    retryable,
    secret_key,
    sign,
)


def test_signature_matches_the_published_standard_webhooks_vector() -> None:
    # The test vector of the Standard Webhooks reference libraries.
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_generated_secrets_are_whsec_and_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret_key(secret)) == 32
    assert new_secret() != secret


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy(
        base_delay=timedelta(seconds=5), max_delay=timedelta(seconds=60), jitter=0.2
    )
    rng = random.Random(1)
    for attempt, base in ((1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)):
        delay = policy.delay(attempt, rng=rng).total_seconds()
        assert base <= delay <= base * 1.2
    assert policy.delay(2, retry_after=30).total_seconds() == 30
    assert policy.delay(2, retry_after=10_000) == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("status", "again"),
    [(None, True), (500, True), (503, True), (408, True), (429, True), (400, False),
     (404, False), (410, False), (301, False), (302, False)],
)  # fmt: skip
def test_what_is_retried(status: int | None, again: bool) -> None:
    assert retryable(status) is again


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7
    assert parse_retry_after("Tue, 01 Jan 2030 00:00:30 GMT", now=now) == 30
    assert parse_retry_after("soon", now=now) is None


@pytest.mark.parametrize(
    "url", ["ftp://x.example/", "http://", "example.com/hook", "http://u:p@x.example/"]
)
def test_urls_are_absolute_http_without_credentials(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_url(url)
    assert refused.value.field == "url"


def test_event_types_are_kinds_or_areas() -> None:
    assert check_event_types(["run.failed", "task.*", "run.failed"]) == ("run.failed", "task.*")
    with pytest.raises(ValidationError) as refused:
        check_event_types(["Run Failed"])
    assert refused.value.field == "event_types"
