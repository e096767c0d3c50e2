"""Where the authentication middleware finds a request's credentials: the first
``Authorization`` and the first ``X-API-Key`` of the raw headers, as the framework's own
``Headers`` would give them (a second, smuggled copy of either never replaces the first)."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import Headers

from scheduler_api.auth.middleware import _credentials


def _scope(*headers: tuple[bytes, bytes]) -> Any:
    return {"type": "http", "headers": list(headers)}


def test_both_credentials_are_read_and_others_ignored() -> None:
    scope = _scope(
        (b"host", b"example"),
        (b"x-api-key", b"sk_abc_def"),
        (b"authorization", b"Bearer token"),
        (b"x-api-keys", b"not-this"),
    )
    assert _credentials(scope) == ("Bearer token", "sk_abc_def")


def test_none_when_absent() -> None:
    assert _credentials(_scope((b"accept", b"*/*"))) == (None, None)


def test_the_first_of_repeated_headers_wins_as_the_framework_reads_them() -> None:
    scope = _scope(
        (b"authorization", b"Bearer first"),
        (b"x-api-key", b"sk_first"),
        (b"authorization", b"Bearer second"),
        (b"x-api-key", b"sk_second"),
    )
    headers = Headers.from_scope(scope)
    assert _credentials(scope) == (headers.get("authorization"), headers.get("x-api-key"))
    assert _credentials(scope) == ("Bearer first", "sk_first")


def test_values_are_latin_1_as_http_carries_them() -> None:
    scope = _scope((b"x-api-key", "sk_\u00e9".encode("latin-1")))
    assert _credentials(scope) == (None, Headers.from_scope(scope).get("x-api-key"))
