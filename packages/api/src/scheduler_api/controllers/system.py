"""``/api/v1/system``: status, version and a configuration summary without secrets."""

from __future__ import annotations

import time

from litestar import Controller, get

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.controllers.health import run_probes
from scheduler_api.dependencies import CurrentPrincipal, Options, Services
from scheduler_api.openapi import problems
from scheduler_api.schemas.system import SystemOut
from scheduler_application.accounts.access import ensure_can_read_tasks

_STARTED = time.monotonic()


class SystemController(Controller):
    path = "/system"
    tags = ("system",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @get(
        "/",
        summary="Status, version and configuration summary",
        description="Instance-wide run and worker counts are shown to admins and operators only.",
        responses=problems(),
    )
    async def system(
        self, services: Services, options: Options, principal: CurrentPrincipal
    ) -> SystemOut:
        ensure_can_read_tasks(principal)
        checks = await run_probes(services, options)
        counts = await services.status.counts(principal=principal)
        return SystemOut(
            status="ok" if all(v == "ok" for v in checks.values()) else "degraded",
            version=options.version,
            api_version="v1",
            time=services.clock.now(),
            uptime_seconds=round(time.monotonic() - _STARTED, 3),
            checks=checks,
            config=dict(options.config_summary),
            runs_by_status=(
                {s.value: n for s, n in counts.runs_by_status.items()} if counts else None
            ),
            workers_by_status=(
                {s.value: n for s, n in counts.workers_by_status.items()} if counts else None
            ),
        )
