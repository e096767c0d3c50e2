"""Names handlers use for what the app provides: ``services``, ``options`` and ``principal``."""

from __future__ import annotations

from litestar.di import NamedDependency

from scheduler_api.services import ApiOptions, ApiServices
from scheduler_application.accounts.access import Principal

Services = NamedDependency[ApiServices]
Options = NamedDependency[ApiOptions]
CurrentPrincipal = NamedDependency[Principal]
