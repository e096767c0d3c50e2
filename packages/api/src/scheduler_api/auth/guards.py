"""Role guards. The application enforces every rule itself; these fence whole routers so that a
worker credential cannot even reach the handlers of the user-facing API."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from scheduler_application.accounts.access import Principal
from scheduler_application.errors import PermissionDenied
from scheduler_domain.accounts import Role


async def refuse_worker_role(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """A coroutine: the framework would run a plain function on a worker thread, per request."""
    user = connection.scope.get("user")
    if isinstance(user, Principal) and user.role is Role.WORKER:
        raise PermissionDenied("role 'worker' can only use the worker protocol (/api/v1/worker)")
