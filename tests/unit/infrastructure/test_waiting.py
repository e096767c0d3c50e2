"""Which failed connection attempts at start-up are worth retrying."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from scheduler_infrastructure.waiting import is_transient


def _wrapped(error: Exception) -> DBAPIError:
    """As SQLAlchemy hands a driver's error on."""
    try:
        raise DBAPIError("SELECT 1", {}, error) from error
    except DBAPIError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "error",
    [
        # The server terminated the backend while the driver was still setting it up (seen
        # when a dispatcher started while an operator killed the database's connections).
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 11; another operation (2) is in progress"
        ),
        asyncpg.exceptions.InterfaceError("connection was closed in the middle of operation"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_dropped_or_unready_connection_is_retried(error: Exception) -> None:
    assert is_transient(error)
    assert is_transient(_wrapped(error))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.InvalidCatalogNameError('database "nope" does not exist'),
        asyncpg.exceptions.InvalidPasswordError("password authentication failed"),
        ValueError("not a URL"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_refusal_or_a_mistake_is_not(error: Exception) -> None:
    assert not is_transient(error)
    assert not is_transient(_wrapped(error))
