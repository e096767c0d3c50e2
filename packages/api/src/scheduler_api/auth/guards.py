"""Role fences. The application enforces every rule itself; this one fences whole routers so
that a worker credential cannot even reach the handlers of the user-facing API.

A router opts in with ``opt = {WORKERS_REFUSED: True}``; the authentication middleware refuses
a principal of role ``worker`` there, right after authenticating it. (Not a Litestar guard:
the framework copies the route handler for every guard call of every request, which cost 5 %
of the API's CPU on a task read.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler_application.accounts.access import Principal
from scheduler_application.errors import PermissionDenied
from scheduler_domain.accounts import Role

#: The route option of the routers a worker credential may not use.
WORKERS_REFUSED = "workers_refused"


def refuse_worker_role(principal: Principal, route_opt: Mapping[str, Any]) -> None:
    """PermissionDenied for a worker on a route that refuses workers."""
    if principal.role is Role.WORKER and route_opt.get(WORKERS_REFUSED):
        raise PermissionDenied("role 'worker' can only use the worker protocol (/api/v1/worker)")
