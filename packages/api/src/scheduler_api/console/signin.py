"""Sign in with the API's accounts (the same log-in use case and throttle) and sign out (the
same log-out: the refresh family is revoked and every access token of the user ends)."""

from __future__ import annotations

import contextlib
import re
import secrets
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from scheduler_api.console.router import CONSOLE_PATH, console_state
from scheduler_api.console.session import (
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    SessionCookie,
    expired_cookies,
    is_secure,
    new_session_id,
    pre_session_cookie,
    session_cookie,
)
from scheduler_api.dependencies import Options, Services
from scheduler_application.errors import AuthenticationFailed
from scheduler_domain.accounts import Role

Next = Annotated[str | None, QueryParameter(name="next", max_length=2000)]


#: A console path with an optional query, in URL characters only (no ``\\``, spaces or
#: line breaks, which a header could not carry).
_CONSOLE_TARGET = re.compile(r"^/ui(?:[/?][A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$")


def safe_next(target: str | None) -> str:
    """Only a console path of this site (never ``//host`` or a scheme)."""
    if not target or "//" in target or not _CONSOLE_TARGET.match(target):
        return CONSOLE_PATH
    return target


def _login_page(
    request: Request[Any, Any, Any], *, next_path: str, error: str | None, status: int
) -> Template:
    state = console_state(request)
    secure = is_secure(request, always=state.secure_cookies)
    pre = request.cookies.get(PRE_SESSION_COOKIE) or secrets.token_urlsafe(24)
    return Template(
        "login.html",
        context={
            "title": "Sign in",
            "principal": None,
            "csrf_token": state.keys.csrf_for("login", pre),
            "next": next_path,
            "error": error,
        },
        cookies=[pre_session_cookie(pre, secure=secure)],
        status_code=status,
    )


class SignInController(Controller):
    @get("/login")
    async def login_form(self, request: Request[Any, Any, Any], next_path: Next = None) -> Template:
        return _login_page(request, next_path=safe_next(next_path), error=None, status=200)

    @post("/login")
    async def login(
        self, request: Request[Any, Any, Any], services: Services, options: Options
    ) -> Template | Redirect:
        form = await request.form()
        username = form.get("username")
        password = form.get("password")
        target = safe_next(form.get("next") if isinstance(form.get("next"), str) else None)
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            return _login_page(
                request, next_path=target, error="Enter a username and password.", status=400
            )
        address = request.client.host if request.client is not None else "unknown"
        options.throttle.check(username, address)
        try:
            pair = await services.auth.login(username, password)
        except AuthenticationFailed:
            options.throttle.failed(username)
            return _login_page(
                request, next_path=target, error="Invalid username or password.", status=401
            )
        options.throttle.succeeded(username)
        if pair.user.role is Role.WORKER:
            with contextlib.suppress(AuthenticationFailed):
                await services.auth.logout(pair.refresh_token)
            return _login_page(
                request,
                next_path=target,
                error="Worker accounts cannot use the console.",
                status=403,
            )
        secure = is_secure(request, always=console_state(request).secure_cookies)
        cookie = SessionCookie(pair.access_token, pair.refresh_token, new_session_id())
        gone = [c for c in expired_cookies(secure=secure) if c.key == PRE_SESSION_COOKIE]
        return Redirect(
            target, status_code=303, cookies=[session_cookie(cookie, secure=secure), *gone]
        )

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any], services: Services) -> Redirect:
        cookie = SessionCookie.decode(request.cookies.get(SESSION_COOKIE))
        if cookie is not None:
            with contextlib.suppress(AuthenticationFailed):
                await services.auth.logout(cookie.refresh_token)
        secure = is_secure(request, always=console_state(request).secure_cookies)
        return Redirect(
            f"{CONSOLE_PATH}/login", status_code=303, cookies=expired_cookies(secure=secure)
        )
