"""The console's named shared limits and circuit breakers: every limit with its current use
(its rate and the tokens its bucket holds, runs in flight against its cap, tasks and queues
bound to it), one limit with its partitions, and — for operators and admins — create, change
(a limit is written whole, as ``PUT /api/v1/limits/{name}``) and delete; the circuit breakers
with their state, failures, when an open one lets its probe through and the probe run.

Everything goes through :class:`~scheduler_application.limits.LimitService`, the use case the
REST API calls (the API has no action on a circuit: it closes when its probe succeeds, so the
console offers none). The role is checked first, so a viewer or user learns nothing more than
a 403. CSRF and origin were checked by the router's hook."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from scheduler_api.console.context import (
    Console,
    FormError,
    form_error,
    form_fields,
    form_page,
    redirect,
)
from scheduler_api.dependencies import Services
from scheduler_application.errors import AlreadyExists, NotFound
from scheduler_application.limits.service import LimitView, limit_to_spec, parse_limit
from scheduler_application.operations.queue_control import ensure_steers_queues
from scheduler_domain.errors import ValidationError
from scheduler_domain.shared_limits import Partition, validate_limit_name

Name = Annotated[str, PathParameter(max_length=200)]
_WHOLE = ("max_concurrency", "failure_threshold")


def limit_body(form: dict[str, str]) -> dict[str, Any]:
    """The limit's JSON from its form: an empty field is a setting left unset."""
    body: dict[str, Any] = {"description": form.get("description", "").strip()}
    for key in ("rate", "partition_by", "partition_rate"):
        value = form.get(key, "").strip()
        body[key] = value or None
    for key in _WHOLE:
        value = form.get(key, "").strip()
        try:
            body[key] = int(value) if value else None
        except ValueError:
            raise ValidationError(f"{key} must be a whole number", field=key) from None
    cool_down = form.get("cool_down_seconds", "").strip()
    try:
        body["cool_down_seconds"] = float(cool_down) if cool_down else None
    except ValueError:
        raise ValidationError(
            "cool_down_seconds must be a number", field="cool_down_seconds"
        ) from None
    return body


def limit_values(view: LimitView | None) -> dict[str, str]:
    if view is None:
        return {}
    spec = limit_to_spec(view.limit)
    shown = {k: "" if v is None else str(v) for k, v in spec.items()}
    seconds = spec["cool_down_seconds"]
    if isinstance(seconds, float) and seconds.is_integer():
        shown["cool_down_seconds"] = str(int(seconds))
    return shown


async def _list_page(
    request: Request[Any, Any, Any],
    console: Console,
    services: Services,
    *,
    error: FormError | None = None,
    values: dict[str, str] | None = None,
) -> Template:
    limits = await services.limits.all(principal=console.principal)
    circuits = await services.limits.circuits(principal=console.principal)
    return form_page(
        request,
        console,
        "limits.html",
        title="Limits and circuits",
        limits=limits,
        circuits=sorted(
            circuits, key=lambda c: (c.circuit.state.value == "closed", c.circuit.name)
        ),
        partitions=[p.value for p in Partition],
        error=error,
        values=values or {},
        now=services.clock.now(),
    )


async def _detail(
    request: Request[Any, Any, Any],
    console: Console,
    services: Services,
    name: str,
    *,
    error: FormError | None = None,
    values: dict[str, str] | None = None,
) -> Template:
    view = await services.limits.get(name, principal=console.principal)
    circuits = await services.limits.circuits(principal=console.principal)
    circuit = next((c for c in circuits if c.circuit.name == f"limit:{view.limit.name}"), None)
    return form_page(
        request,
        console,
        "limit.html",
        title=f"Limit {view.limit.name}",
        view=view,
        circuit=circuit,
        partitions=[p.value for p in Partition],
        error=error,
        values=values if values is not None else limit_values(view),
        now=services.clock.now(),
    )


class LimitsController(Controller):
    @get("/limits")
    async def limits(
        self, request: Request[Any, Any, Any], console: Console, services: Services
    ) -> Template:
        return await _list_page(request, console, services)

    @get("/limits/{name:str}")
    async def limit(
        self, request: Request[Any, Any, Any], console: Console, services: Services, name: Name
    ) -> Template:
        return await _detail(request, console, services, name)

    @post("/limits")
    async def create(
        self, request: Request[Any, Any, Any], console: Console, services: Services
    ) -> Template | Redirect:
        ensure_steers_queues(console.principal)  # the role first: a viewer learns nothing more
        form = await form_fields(request)
        name = form.get("name", "").strip()
        try:
            validate_limit_name(name)
            try:
                await services.limits.get(name, principal=console.principal)
            except NotFound:
                pass
            else:
                raise AlreadyExists(
                    f"a limit named {name!r} exists; change it on its page", field="name"
                )
            await services.limits.put(
                parse_limit(name, limit_body(form)), principal=console.principal
            )
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return await _list_page(request, console, services, error=shown, values=form)
        return redirect(request, console, f"/ui/limits/{name}")

    @post("/limits/{name:str}/edit")
    async def change(
        self, request: Request[Any, Any, Any], console: Console, services: Services, name: Name
    ) -> Template | Redirect:
        ensure_steers_queues(console.principal)
        current = await services.limits.get(name, principal=console.principal)
        form = await form_fields(request)
        try:
            await services.limits.put(
                parse_limit(current.limit.name, limit_body(form)), principal=console.principal
            )
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return await _detail(request, console, services, name, error=shown, values=form)
        return redirect(request, console, f"/ui/limits/{current.limit.name}")

    @post("/limits/{name:str}/delete")
    async def delete(
        self, request: Request[Any, Any, Any], console: Console, services: Services, name: Name
    ) -> Redirect:
        ensure_steers_queues(console.principal)
        await services.limits.delete(validate_limit_name(name), principal=console.principal)
        return redirect(request, console, "/ui/limits")
