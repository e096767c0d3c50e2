"""Who is calling: the authentication middleware, the principal dependency and role guards."""

from scheduler_api.auth.guards import WORKERS_REFUSED, refuse_worker_role
from scheduler_api.auth.middleware import PUBLIC, PrincipalMiddleware, provide_principal

__all__ = [
    "PUBLIC",
    "WORKERS_REFUSED",
    "PrincipalMiddleware",
    "provide_principal",
    "refuse_worker_role",
]
