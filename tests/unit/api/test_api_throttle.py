"""Login throttling: failures lock an account for a while; an address has an attempt budget."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler_api.throttle import Allowance, LoginThrottle, Throttled


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(ticker: Ticker, *, account: int = 3, address: int = 100) -> LoginThrottle:
    return LoginThrottle(
        per_account=Allowance(account, timedelta(minutes=10)),
        per_address=Allowance(address, timedelta(minutes=1)),
        monotonic=ticker,
    )


def test_failures_lock_the_account_until_the_oldest_leaves_the_window() -> None:
    ticker = Ticker()
    limiter = throttle(ticker)
    for _ in range(3):
        limiter.check("Alice", "10.0.0.1")
        limiter.failed("Alice")
        ticker.now += 60

    with pytest.raises(Throttled) as locked:
        limiter.check("alice", "10.0.0.2")

    assert locked.value.scope == "account"
    assert locked.value.retry_after == 600 - 180
    ticker.now += 421
    limiter.check("alice", "10.0.0.2")


def test_success_clears_the_account_failures() -> None:
    ticker = Ticker()
    limiter = throttle(ticker)
    for _ in range(2):
        limiter.failed("alice")
    limiter.succeeded("alice")
    for _ in range(2):
        limiter.failed("alice")

    limiter.check("alice", "10.0.0.1")


def test_an_address_has_an_attempt_budget() -> None:
    ticker = Ticker()
    limiter = throttle(ticker, address=2)
    limiter.check("a", "10.0.0.1")
    limiter.check("b", "10.0.0.1")

    with pytest.raises(Throttled) as limited:
        limiter.check("c", "10.0.0.1")
    limiter.check("c", "10.0.0.2")

    assert limited.value.scope == "address"
    assert 0 < limited.value.retry_after <= 60


def test_tracked_keys_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import scheduler_api.throttle as module

    monkeypatch.setattr(module, "MAX_TRACKED_KEYS", 10)
    ticker = Ticker()
    limiter = throttle(ticker)
    for index in range(50):
        limiter.failed(f"user-{index}")

    assert len(limiter._accounts._events) == 10
