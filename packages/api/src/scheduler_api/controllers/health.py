"""``/health`` (the process answers) and ``/ready`` (its database and queue answer too)."""

from __future__ import annotations

import asyncio

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from scheduler_api.auth import PUBLIC
from scheduler_api.dependencies import Options, Services
from scheduler_api.schemas.system import HealthOut, ReadinessOut
from scheduler_api.services import ApiOptions, ApiServices

#: Probe name → the dependency it checks, as metrics name it.
_DEPENDENCY = {"queue": "broker"}


async def run_probes(services: ApiServices, options: ApiOptions) -> dict[str, str]:
    """``ok`` or a one-line reason per dependency, checked concurrently with a timeout."""

    async def check(name: str) -> str:
        try:
            async with asyncio.timeout(options.probe_timeout.total_seconds()):
                await services.probes[name]()
        except TimeoutError:
            services.observer.dependency_unavailable(_DEPENDENCY.get(name, name))
            return "timed out"
        except Exception as error:  # any failure is "not ready", reported, never raised
            services.observer.dependency_unavailable(_DEPENDENCY.get(name, name))
            return f"unavailable ({type(error).__name__})"
        return "ok"

    names = sorted(services.probes)
    results = await asyncio.gather(*(check(name) for name in names))
    return dict(zip(names, results, strict=True))


class HealthController(Controller):
    path = "/"
    tags = ("health",)
    opt = {PUBLIC: True}  # noqa: RUF012
    security = [{}]  # noqa: RUF012

    @get("/health", summary="Liveness: the process is serving requests")
    async def health(self) -> HealthOut:
        return HealthOut(status="ok")

    @get(
        "/ready",
        summary="Readiness: the database and the queue answer",
        description="200 when every dependency answers, else 503 naming what is down.",
        responses={
            503: ResponseSpec(
                data_container=ReadinessOut,
                description="A dependency is down",
                generate_examples=False,
            )
        },
    )
    async def ready(self, services: Services, options: Options) -> Response[ReadinessOut]:
        checks = await run_probes(services, options)
        ready = all(value == "ok" for value in checks.values())
        return Response(
            ReadinessOut(status="ready" if ready else "unavailable", checks=checks),
            status_code=200 if ready else 503,
        )
