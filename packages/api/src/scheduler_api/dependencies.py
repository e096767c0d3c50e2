"""Names handlers use for what the app provides: ``services``, ``options`` and ``principal``.

The routes a client calls thousands of times a second (a task's or a run's read, a trigger)
take the request instead and ask it with :func:`services_of` and ``provide_principal``: Litestar
resolves each declared dependency through its own signature model on every request, which for
these routes cost more than the rest of the handler (a cached task read: ~15 % of the process's
time per request, measured with ``scripts/bench_asgi.py``)."""

from __future__ import annotations

from typing import Any, cast

from litestar import Request
from litestar.di import NamedDependency

from scheduler_api.services import ApiOptions, ApiServices
from scheduler_application.accounts.access import Principal

Services = NamedDependency[ApiServices]
Options = NamedDependency[ApiOptions]
CurrentPrincipal = NamedDependency[Principal]

#: Where the app keeps its services for :func:`services_of`.
SERVICES_STATE = "api_services"


def services_of(request: Request[Any, Any, Any]) -> ApiServices:
    """What the ``services`` dependency gives, without resolving one."""
    return cast("ApiServices", request.app.state[SERVICES_STATE])
