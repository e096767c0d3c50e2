"""The console's router: its pages and actions under ``/ui``, its static files, the checks every
console request passes (CSRF, origin) and the HTML answer to errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from scheduler_api.auth import PUBLIC
from scheduler_api.console.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    ConsoleKeys,
    RefreshCoalescer,
    SessionCookie,
    check_origin,
    expired_cookies,
    is_secure,
    session_cookie,
)
from scheduler_api.console.views import (
    duration,
    in_zone,
    json_text,
    schedule_words,
    trace_id,
)
from scheduler_api.errors import handle_exception
from scheduler_api.request_checks import check_request
from scheduler_api.services import ApiOptions, ApiServices
from scheduler_application.errors import AuthenticationFailed, PermissionDenied

logger = logging.getLogger("scheduler.api.console")

CONSOLE_PATH = "/ui"
CONSOLE_STATE = "console"
HERE = Path(__file__).parent
#: Marks a request made by the console's own script to refresh part of a page.
LIVE_HEADER = "x-console-live"
#: Where the request's console session is kept once opened (request state).
SESSION_STATE = "console_session"


@dataclass(frozen=True, slots=True)
class ConsoleState:
    keys: ConsoleKeys
    refresher: RefreshCoalescer
    secure_cookies: bool


def console_state(request: Request[Any, Any, Any]) -> ConsoleState:
    state: ConsoleState = request.app.state[CONSOLE_STATE]
    return state


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        schedule_words=schedule_words,
        in_zone=in_zone,
        duration=duration,
        trace_id=trace_id,
        json_text=json_text,
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


async def check_console_request(request: Request[Any, Any, Any]) -> None:
    """Every state-changing console request: same origin, and the CSRF token of its session
    (or, for the sign-in form, of its pre-session cookie)."""
    await check_request(request)
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    check_origin(request)
    presented = request.headers.get(CSRF_HEADER)
    if presented is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    keys = console_state(request).keys
    if request.url.path == f"{CONSOLE_PATH}/login":
        pre = request.cookies.get(PRE_SESSION_COOKIE)
        if pre and keys.matches("login", pre, presented):
            return
    else:
        cookie = SessionCookie.decode(request.cookies.get(SESSION_COOKIE))
        if cookie is not None and keys.matches("csrf", cookie.session_id, presented):
            return
    raise PermissionDenied(
        "the form is stale or forged (CSRF token missing or wrong); reload the page",
        field=CSRF_FIELD,
    )


def console_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Errors as pages: no session → the sign-in page; the rest with the API's status."""
    secure = is_secure(request, always=console_state(request).secure_cookies)
    if isinstance(exc, AuthenticationFailed):
        if request.headers.get(LIVE_HEADER):
            return Response("", status_code=401)
        target = request.url.path if request.method == "GET" else CONSOLE_PATH
        query = f"?{request.url.query}" if request.url.query and request.method == "GET" else ""
        return Redirect(
            f"{CONSOLE_PATH}/login?next={quote(target + query, safe='')}",
            status_code=303,
            cookies=[c for c in expired_cookies(secure=secure) if c.key == SESSION_COOKIE],
        )
    problem = handle_exception(request, exc)
    status = problem.status_code or 500
    detail = getattr(problem.content, "detail", "error")
    field = getattr(problem.content, "field", None)
    session = request.state.get(SESSION_STATE)
    renewed = getattr(session, "renewed", None)
    return Template(
        "error.html",
        context={
            "title": f"Error {status}",
            "status": status,
            "detail": detail,
            "field": field if isinstance(field, str) else None,
            "principal": None,
        },
        status_code=status,
        headers={k: v for k, v in problem.headers.items() if k.lower() == "retry-after"},
        cookies=[session_cookie(renewed, secure=secure)] if renewed is not None else [],
    )


@get("/", opt={PUBLIC: True}, include_in_schema=False)
async def root_redirect() -> Redirect:
    """``/`` is the console."""
    return Redirect(CONSOLE_PATH, status_code=302)


def console_routers() -> list[Router]:
    # Imported here: the pages import the router module for its names.
    from scheduler_api.console.actions import ActionsController
    from scheduler_api.console.bulk import BulkController
    from scheduler_api.console.context import provide_console
    from scheduler_api.console.limits import LimitsController
    from scheduler_api.console.live import LiveController
    from scheduler_api.console.output import OutputController
    from scheduler_api.console.pages import PagesController
    from scheduler_api.console.queues import QueueActionsController
    from scheduler_api.console.signin import SignInController
    from scheduler_api.console.task_templates import TemplatesController
    from scheduler_api.console.teams import TeamsController
    from scheduler_api.console.webhooks import WebhooksController

    static = create_static_files_router(
        path=f"{CONSOLE_PATH}/static",
        directories=[HERE / "static"],
        opt={PUBLIC: True},
        cache_control=CacheControlHeader(max_age=300),
        include_in_schema=False,
    )
    pages = Router(
        path=CONSOLE_PATH,
        route_handlers=[
            SignInController,
            PagesController,
            ActionsController,
            BulkController,
            QueueActionsController,
            LiveController,
            OutputController,
            WebhooksController,
            TemplatesController,
            LimitsController,
            TeamsController,
        ],
        opt={PUBLIC: True},
        dependencies={"console": Provide(provide_console)},
        before_request=check_console_request,
        exception_handlers={Exception: console_error},
        include_in_schema=False,
    )
    return [pages, static]


def new_console_state(services: ApiServices, options: ApiOptions) -> ConsoleState:
    return ConsoleState(
        keys=ConsoleKeys(options.console_key),
        refresher=RefreshCoalescer(services.auth),
        secure_cookies=options.console_secure_cookies,
    )
