"""The REST API as the CLI sees it: an httpx client that authenticates, refreshes its session and
turns every failure into a :class:`~scheduler_cli.errors.CliError` with a one-line message.

httpx is confined to this module: commands get decoded JSON and CliErrors, never an
``httpx.Response`` or an ``httpx`` exception.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import httpx

from scheduler_cli.credentials import CredentialStore, Session
from scheduler_cli.errors import ApiError, BadInput, CliError, NotLoggedIn, Unreachable

API_PREFIX = "/api/v1"
DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_SECONDS = 30.0
#: The most a list endpoint returns per page (the server clamps larger values to its cap).
PAGE_SIZE = 200

Clock = Callable[[], float]


def normalize_url(url: str) -> str:
    """The server's root URL: no trailing slash, and ``/api/v1`` dropped if it was given."""
    text = url.strip().rstrip("/")
    text = text.removesuffix(API_PREFIX).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInput(f"the API URL must look like http://host:port, not {url!r}")
    return text


def _login_hint(api_url: str) -> str:
    return f"run `scheduler login --api-url {api_url}` (or set SCHEDULER_API_KEY)"


class ApiKeyAuth(httpx.Auth):
    """An API key (``sk_…``), sent as a bearer token."""

    def __init__(self, key: str) -> None:
        self._header = f"Bearer {key.strip()}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class SessionAuth(httpx.Auth):
    """The stored login. An access token about to expire, or one the server refuses, is
    exchanged once for a new pair with the refresh token; the new pair is saved at once, since
    the old refresh token is spent. Without a stored login requests go out bare, so that a
    wrong URL says "cannot reach" and a right one says "not logged in"."""

    #: Not read for every answer: an event stream's body never ends. The refresh answer is
    #: read where it is needed.
    requires_response_body = False

    def __init__(self, *, store: CredentialStore, api_url: str, clock: Clock = time.time) -> None:
        self._store = store
        self._api_url = api_url
        self._clock = clock
        self.session: Session | None = store.get(api_url)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.session is None:
            response = yield request
            if response.status_code == 401:
                raise NotLoggedIn(f"not logged in to {self._api_url}; {_login_hint(self._api_url)}")
            return
        refreshed = False
        if not self.session.access_valid(self._clock()):
            yield from self._refresh(self.session)
            refreshed = True
        request.headers["Authorization"] = f"Bearer {self._access_token()}"
        response = yield request
        if response.status_code == 401 and not refreshed:
            yield from self._refresh(self.session)
            request.headers["Authorization"] = f"Bearer {self._access_token()}"
            yield request

    def _access_token(self) -> str:
        assert self.session is not None
        return self.session.access_token

    def _refresh(self, stale: Session) -> Generator[httpx.Request, httpx.Response, None]:
        spent = stale.refresh_token
        with self._store.locked():
            latest = self._store.get(self._api_url)
            now = self._clock()
            if latest is None:
                raise NotLoggedIn(f"logged out of {self._api_url}; {_login_hint(self._api_url)}")
            if latest.refresh_token != spent and latest.access_valid(now):
                self.session = latest  # another command refreshed it meanwhile
                return
            if not latest.refresh_valid(now):
                self._store.forget(self._api_url)
                raise NotLoggedIn(
                    f"your session at {self._api_url} has expired; {_login_hint(self._api_url)}"
                )
            response = yield httpx.Request(
                "POST",
                f"{self._api_url}{API_PREFIX}/auth/refresh",
                json={"refresh_token": latest.refresh_token},
            )
            response.read()
            if response.status_code == 401:
                self._store.forget(self._api_url)
                raise NotLoggedIn(
                    f"your session at {self._api_url} has expired or was revoked; "
                    f"{_login_hint(self._api_url)}"
                )
            if response.status_code != 200:
                raise problem_error(response)
            self.session = latest.renewed(_json(response), now=now)
            self._store.save(self.session, make_default=False)


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful response, for the few commands that need more than its body."""

    status: int
    body: Any
    headers: Mapping[str, str]


class ApiClient:
    """One API at ``api_url``; a context manager that closes its connections."""

    def __init__(
        self,
        *,
        api_url: str,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.api_url = api_url
        self.auth = auth
        self._http = httpx.Client(
            base_url=f"{api_url}{API_PREFIX}",
            auth=auth,
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": f"scheduler-cli/{_version()}", "Accept": "application/json"},
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        response = self._send(method, path, json=json, params=params, headers=headers)
        return Answer(response.status_code, _json(response), dict(response.headers))

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The response of a successful call; any failure is a CliError."""
        query = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        try:
            response = self._http.request(
                method, path, json=json, params=query, headers=dict(headers or {})
            )
        except httpx.TransportError as error:
            raise Unreachable(f"cannot reach {self.api_url}: {transport_reason(error)}") from None
        if response.status_code >= 400:
            raise problem_error(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).body

    def post(self, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, headers=headers).body

    def patch(self, path: str, body: Any, *, headers: Mapping[str, str] | None = None) -> Any:
        return self.request("PATCH", path, json=body, headers=headers).body

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body).body

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def events(
        self,
        params: Mapping[str, Any],
        *,
        idle_timeout: Callable[[], float | None] = lambda: None,
        reconnects: int = 5,
    ) -> Generator[dict[str, Any] | None, None, None]:
        """The event stream (``GET /events``, Server-Sent Events) as decoded events, and None
        for each heartbeat. A dropped connection is resumed after the last event seen
        (``Last-Event-ID``), so nothing is missed or repeated. ``idle_timeout()`` bounds each
        wait for the next line (None: the stream's own heartbeats); past it, TimeoutError."""
        last: str | None = None
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            query = {k: v for k, v in params.items() if v is not None and v != []}
            wait = idle_timeout()
            timeout = httpx.Timeout(self._http.timeout.connect, read=wait, write=10.0, pool=10.0)
            try:
                with self._http.stream(
                    "GET", "/events", params=query, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise problem_error(response)
                    for message in _sse_messages(response.iter_lines()):
                        failures = 0
                        if "data" not in message:
                            yield None
                            continue
                        last = message.get("id", last)
                        yield dict(json.loads(message["data"]))
            except httpx.ReadTimeout:
                raise TimeoutError("no event before the timeout") from None
            except (httpx.TransportError, httpx.StreamError) as error:
                failures += 1
                if failures > reconnects:
                    raise Unreachable(
                        f"lost the event stream from {self.api_url}: {_reason(error)}"
                    ) from None
                time.sleep(min(0.2 * 2**failures, 5.0))

    def items(
        self, path: str, *, limit: int | None = None, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, page after page (at most ``limit`` of them)."""
        cursor: str | None = None
        taken = 0
        while True:
            size = PAGE_SIZE if limit is None else max(1, min(PAGE_SIZE, limit - taken))
            page = self.get(path, **params, limit=size, cursor=cursor)
            for item in page.get("items", []):
                yield item
                taken += 1
                if limit is not None and taken >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def page(
        self, path: str, *, limit: int | None, **params: Any
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` items (all with None), and whether more exist."""
        taken = list(self.items(path, limit=None if limit is None else limit + 1, **params))
        if limit is not None and len(taken) > limit:
            return taken[:limit], True
        return taken, False


def problem_error(response: httpx.Response) -> ApiError:
    """An error answer as one line: the problem's ``detail``, with the ``field`` it names."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {}
    detail = problem.get("detail") or problem.get("title")
    field = problem.get("field") if isinstance(problem.get("field"), str) else None
    code = problem.get("code") if isinstance(problem.get("code"), str) else None
    if detail:
        message = " ".join(str(detail).split())
    else:
        message = f"the server answered HTTP {status} {response.reason_phrase}".rstrip()
    own_words = message
    if field and status in (400, 409, 422) and field not in message:
        message = f"{field}: {message}"
    if status >= 500 and problem.get("instance"):
        message = f"{message} (incident {problem['instance']})"
    retry_after = response.headers.get("Retry-After")
    if status in (409, 429) and retry_after:
        # 409 with Retry-After: a lost race (nothing written), worth the same command again.
        message = f"{message}; try again in {retry_after} s"
    return ApiError(message, status=status, code=code, field=field, detail=own_words)


def transport_reason(error: httpx.TransportError) -> str:
    """Why no answer came, in a few words: ``connection refused``, ``timed out``…"""
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    text = str(error).strip()
    if text.startswith("[Errno") and "]" in text:
        text = text.split("]", 1)[1].strip()
    return (text[0].lower() + text[1:]) if text else type(error).__name__


def _reason(error: httpx.TransportError | httpx.StreamError) -> str:
    if isinstance(error, httpx.TransportError):
        return transport_reason(error)
    return type(error).__name__


def _sse_messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Server-Sent Events: ``field: value`` lines, a blank line ending each message; a comment
    (``: heartbeat``) alone is a message without data."""
    message: dict[str, str] = {}
    for line in lines:
        if line == "":
            if message:
                yield message
            message = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data" and "data" in message:
            message["data"] += "\n" + value
        elif name:
            message[name] = value
        else:
            message.setdefault("comment", value)
    if message:
        yield message


def _json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise CliError(
            f"the server at {response.request.url} did not answer with JSON "
            f"(HTTP {response.status_code})"
        ) from None


def _version() -> str:
    try:
        return metadata.version("scheduler-cli")
    except metadata.PackageNotFoundError:
        return "0"
