"""The console's session: one cookie holding the pair of tokens a log-in issues and a random
session id, and the CSRF tokens derived from that id.

* The cookie is ``HttpOnly`` (script cannot read it), ``SameSite=Strict`` (no other site's page
  sends it), ``Secure`` over HTTPS or when the configuration says TLS is terminated in front,
  and has no ``Max-Age`` (it ends with the browser session).
* Its access token is the API's short-lived one, checked on every request exactly like a
  bearer token: a log-out, a password change or reset, a disabled account or a role change
  ends it at once. When it has merely expired, the refresh token in the same cookie is spent
  for a new pair (the refresh rules apply: a revoked family cannot refresh). Concurrent
  requests of one browser presenting the same refresh token share one refresh, so the
  family's reuse detection does not mistake them for theft.
* CSRF: every state-changing request carries ``HMAC(key, "csrf" ‖ session id)`` in the form
  field ``csrf_token`` or the ``X-CSRF-Token`` header; the log-in form, before any session,
  uses the same construction over a random pre-session cookie. Requests whose ``Origin`` names
  another site are refused as well.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie

from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.auth import AuthService, TokenPair
from scheduler_application.errors import AuthenticationFailed, PermissionDenied

SESSION_COOKIE = "scheduler_console"
PRE_SESSION_COOKIE = "scheduler_console_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = "/ui"
#: How long a refresh's result is shared with the requests that presented the same token.
_SHARED_REFRESH_SECONDS = 30.0
_SEPARATOR = "~"


@dataclass(frozen=True, slots=True)
class SessionCookie:
    access_token: str
    refresh_token: str
    session_id: str

    def encode(self) -> str:
        return _SEPARATOR.join((self.access_token, self.refresh_token, self.session_id))

    @classmethod
    def decode(cls, value: str | None) -> SessionCookie | None:
        if not value or len(value) > 3800:
            return None
        parts = value.split(_SEPARATOR)
        if len(parts) != 3 or not all(parts):
            return None
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """The signed-in principal of one console request and what the page needs from it."""

    principal: Principal
    cookie: SessionCookie
    csrf_token: str
    #: Set when the request refreshed the tokens: the response must carry it.
    renewed: SessionCookie | None = None


class ConsoleKeys:
    """Derives CSRF tokens; one per app (the key comes from the API's secret)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def csrf_for(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def matches(self, purpose: str, value: str, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(self.csrf_for(purpose, value).encode(), presented.encode())


class RefreshCoalescer:
    """One refresh per refresh token at a time in this process; its result is shared."""

    def __init__(self, auth: AuthService) -> None:
        self._auth = auth
        self._recent: dict[str, tuple[float, asyncio.Task[TokenPair]]] = {}

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = time.monotonic()
        for key in [k for k, (at, _) in self._recent.items() if now - at > _SHARED_REFRESH_SECONDS]:
            del self._recent[key]
        digest = hashlib.sha256(refresh_token.encode()).hexdigest()
        entry = self._recent.get(digest)
        if entry is None:
            entry = (now, asyncio.ensure_future(self._auth.refresh(refresh_token)))
            self._recent[digest] = entry
        return await asyncio.shield(entry[1])


def session_cookie(value: SessionCookie, *, secure: bool) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value.encode(),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def pre_session_cookie(value: str, *, secure: bool) -> Cookie:
    return Cookie(
        key=PRE_SESSION_COOKIE,
        value=value,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
        max_age=3600,
    )


def expired_cookies(*, secure: bool) -> list[Cookie]:
    return [
        Cookie(
            key=name,
            value="",
            path=COOKIE_PATH,
            max_age=0,
            expires=0,
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        for name in (SESSION_COOKIE, PRE_SESSION_COOKIE)
    ]


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


def is_secure(request: Request[Any, Any, Any], *, always: bool) -> bool:
    """``Secure`` cookies over HTTPS, or always when TLS ends in front of the API."""
    return always or request.url.scheme == "https"


def check_origin(request: Request[Any, Any, Any]) -> None:
    """A browser names the page's origin on a POST; another site's is refused."""
    origin = request.headers.get("origin")
    if origin is not None:
        # Hosts only: TLS may end in a proxy in front, which changes the scheme the API sees.
        host = origin.partition("://")[2]
        if host != request.headers.get("host", request.url.netloc):
            raise PermissionDenied("cross-site request refused", field="origin")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise PermissionDenied("cross-site request refused", field="origin")


async def open_session(
    request: Request[Any, Any, Any],
    *,
    auth: AuthService,
    keys: ConsoleKeys,
    refresher: RefreshCoalescer,
) -> ConsoleSession:
    """The request's session, refreshing an expired access token; AuthenticationFailed when
    there is none or it has ended."""
    cookie = SessionCookie.decode(request.cookies.get(SESSION_COOKIE))
    if cookie is None:
        raise AuthenticationFailed("sign in to use the console")
    renewed: SessionCookie | None = None
    try:
        principal = await auth.authenticate(authorization=f"Bearer {cookie.access_token}")
    except AuthenticationFailed:
        pair = await refresher.refresh(cookie.refresh_token)
        renewed = SessionCookie(pair.access_token, pair.refresh_token, cookie.session_id)
        principal = await auth.authenticate(authorization=f"Bearer {renewed.access_token}")
    return ConsoleSession(
        principal=principal,
        cookie=renewed or cookie,
        csrf_token=keys.csrf_for("csrf", cookie.session_id),
        renewed=renewed,
    )
