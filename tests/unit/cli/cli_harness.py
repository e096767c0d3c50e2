"""The real API in this process for the CLI's tests.

The API (its real composition root, on a migrated SQLite file and the memory queue) runs on an
event loop in a background thread; :class:`AppTransport` is a synchronous httpx transport that
hands each request to it over ASGI. The CLI under test is the real one, invoked with typer's
CliRunner and pointed at the app through ``Overrides(transport=…)``. Runs are moved along by
:class:`RemoteWorker`, which speaks the worker protocol over the same bridge.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from litestar import Litestar
from sqlalchemy import delete
from typer.testing import CliRunner, Result

from scheduler_api.bootstrap import build_api
from scheduler_api.throttle import Allowance, LoginThrottle
from scheduler_application.accounts.users import AccountService
from scheduler_application.dispatch.relay import RunRelay
from scheduler_cli.context import Overrides
from scheduler_cli.main import app as cli_app
from scheduler_domain.accounts import Role
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.settings import ApiSettings
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import target_metadata, upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.memory import MemoryRunQueue
from scheduler_infrastructure.resources import Resources, build_relay
from scheduler_infrastructure.security.passwords import Argon2PasswordHasher
from scheduler_infrastructure.security.secret_box import FernetSecretBox, generate_key

T = TypeVar("T")
API_URL = "http://cli-test.invalid"
ADMIN = "admin"
PASSWORD = "correct horse battery staple"
FAST_HASHER = Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class AppTransport(httpx.BaseTransport):
    """Serves synchronous httpx requests with an ASGI app living on ``loop`` (another thread)."""

    def __init__(self, app: Litestar, loop: asyncio.AbstractEventLoop) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = loop
        self.requests: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.requests.append((request.method, request.url.path))
        if request.headers.get("accept") == "text/event-stream":
            return _stream_response(self._asgi.app, self._loop, request, body)

        async def send() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            inner = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self._asgi.handle_async_request(inner)
            content = await response.aread()
            return response.status_code, response.headers.raw, content

        status, headers, content = asyncio.run_coroutine_threadsafe(send(), self._loop).result(30)
        return httpx.Response(status, headers=headers, content=content, request=request)


class _Chunks(httpx.SyncByteStream):
    """A streamed ASGI body, chunk by chunk as the app sends it; closing it disconnects."""

    def __init__(
        self,
        chunks: queue.Queue[bytes | None],
        disconnect: Callable[[], None],
        read_timeout: float | None,
    ) -> None:
        self._chunks = chunks
        self._disconnect = disconnect
        self._read_timeout = 30.0 if read_timeout is None else read_timeout

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._chunks.get(timeout=self._read_timeout)
            except queue.Empty:
                raise httpx.ReadTimeout("no chunk within the read timeout") from None
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self._disconnect()


def _stream_response(
    app: Any, loop: asyncio.AbstractEventLoop, request: httpx.Request, body: bytes
) -> httpx.Response:
    """What ``httpx.ASGITransport`` cannot do: answer with a body that never ends (SSE)."""
    chunks: queue.Queue[bytes | None] = queue.Queue()
    start: queue.Queue[tuple[int, list[tuple[bytes, bytes]]]] = queue.Queue()
    gone = asyncio.Event()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.url.path,
        "raw_path": request.url.raw_path.split(b"?")[0],
        "query_string": request.url.query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "server": ("cli-test.invalid", 80),
        "client": ("127.0.0.1", 40000),
    }
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.put((message["status"], list(message.get("headers", []))))
        elif message["type"] == "http.response.body":
            if message.get("body"):
                chunks.put(message["body"])
            if not message.get("more_body", False):
                chunks.put(None)

    async def serve() -> None:
        try:
            await app(scope, receive, send)
        finally:
            chunks.put(None)

    asyncio.run_coroutine_threadsafe(serve(), loop)
    status, headers = start.get(timeout=30)
    return httpx.Response(
        status,
        headers=headers,
        stream=_Chunks(
            chunks,
            lambda: loop.call_soon_threadsafe(gone.set),
            request.extensions.get("timeout", {}).get("read"),
        ),
        request=request,
    )


@dataclass
class ApiInThread:
    """The app and its loop; ``call`` runs a coroutine there and returns its result."""

    app: Litestar
    loop: asyncio.AbstractEventLoop
    resources: Resources
    accounts: AccountService
    relay: RunRelay

    def publish(self) -> None:
        """What the dispatcher's relay loop does: publish runs that are due (retries)."""
        self.call(self.relay.relay_pending(50))

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def transport(self) -> AppTransport:
        return AppTransport(self.app, self.loop)

    def wipe(self) -> None:
        async def empty() -> None:
            async with self.resources.engine.begin() as connection:
                for table in reversed(target_metadata().sorted_tables):
                    await connection.execute(delete(table))

        self.call(empty())

    def user(self, username: str, role: Role) -> None:
        self.call(self.accounts.create_user(username, PASSWORD, role))

    def secret_env(self, task_id: str) -> dict[str, str]:
        """The task's ``secret_env`` as the server stores it, opened with the server's key."""

        async def read() -> dict[str, str]:
            async with self.resources.uow_factory() as uow:
                task = await uow.tasks.get(task_id)
            assert task is not None
            box = self.resources.secret_box
            assert box is not None
            return {name: box.open(sealed) for name, sealed in task.secret_env.items()}

        return self.call(read())


@contextmanager
def api_in_thread() -> Iterator[ApiInThread]:
    with tempfile.TemporaryDirectory(prefix="scheduler-cli-") as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'scheduler.db'}"
        upgrade(url)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
        thread.start()
        try:
            api = asyncio.run_coroutine_threadsafe(_start(url, loop), loop).result(60)
            try:
                yield api
            finally:
                asyncio.run_coroutine_threadsafe(_stop(api), loop).result(60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _start(url: str, loop: asyncio.AbstractEventLoop) -> ApiInThread:
    settings = Settings(api=ApiSettings(jwt_secret="cli-test-secret-" + "x" * 40))
    queue = MemoryRunQueue()
    await queue.__aenter__()
    engine = create_engine(url, pool_size=5)
    resources = Resources(
        settings=settings,
        engine=engine,
        uow_factory=SqlUnitOfWorkFactory(engine),
        queue=queue,
        clock=SystemClock(),
        secret_box=FernetSecretBox(keys=[generate_key()]),
    )
    throttle = LoginThrottle(
        per_account=Allowance(1000, timedelta(minutes=1)),
        per_address=Allowance(10_000, timedelta(minutes=1)),
    )
    relay = build_relay(resources)  # one per process, handed to the API as `scheduler run` does
    app = build_api(resources, relay=relay, hasher=FAST_HASHER, throttle=throttle)
    for hook in app.on_startup:
        await hook()  # type: ignore[call-arg]
    accounts = AccountService(
        uow_factory=resources.uow_factory, clock=resources.clock, hasher=FAST_HASHER
    )
    return ApiInThread(app=app, loop=loop, resources=resources, accounts=accounts, relay=relay)


async def _stop(api: ApiInThread) -> None:
    await api.relay.aclose()
    await api.resources.engine.dispose()
    await api.resources.queue.__aexit__(None, None, None)  # type: ignore[attr-defined]


@dataclass
class Cli:
    """The real CLI against the in-process API, with its own config directory."""

    api: ApiInThread
    config_home: Path
    transport: AppTransport
    runner: CliRunner

    def __call__(
        self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None
    ) -> Result:
        environ = {
            "XDG_CONFIG_HOME": str(self.config_home),
            "SCHEDULER_API_URL": API_URL,
            **(env or {}),
        }
        clean = {k: v for k, v in environ.items() if v is not None}
        overrides = Overrides(transport=self.transport, environ=clean)
        return self.runner.invoke(cli_app, list(args), input=input, obj=overrides, env=clean)

    def login(self, username: str = ADMIN, password: str = PASSWORD) -> Result:
        result = self("login", "-u", username, "--password-stdin", input=password + "\n")
        assert result.exit_code == 0, result.output + result.stderr
        return result

    @property
    def credentials(self) -> Path:
        return self.config_home / "scheduler" / "credentials.json"


def admin_http(transport: httpx.BaseTransport) -> httpx.Client:
    """A plain HTTP client logged in as the admin, for test steps that must not go through the
    CLI (CliRunner swaps the process's streams, so it cannot run in two threads at once)."""
    http = httpx.Client(transport=transport, base_url=f"{API_URL}/api/v1")
    tokens = http.post("/auth/login", json={"username": ADMIN, "password": PASSWORD}).json()
    http.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    return http


class RemoteWorker:
    """Takes runs and reports their outcome through the worker protocol, as an admin."""

    def __init__(self, api: ApiInThread, http: httpx.Client) -> None:
        self._api = api
        self._http = http
        registered = self._post(
            "/worker/register",
            {
                "name": "test-worker",
                "hostname": "here",
                "pid": os.getpid(),
                "queues": ["default"],
                "capacity": 4,
            },
        )
        self.id = registered["id"]

    def _post(self, path: str, body: dict[str, Any], **params: Any) -> Any:
        response = self._http.post(path, json=body, params=params)
        assert response.status_code in (200, 201, 204), response.text
        return response.json() if response.status_code != 204 else None

    def finish(self, *, status: str, output: str = "", exit_code: int = 0) -> dict[str, Any]:
        """Claim the next run and report ``status``; returns the claimed run."""
        self._api.publish()
        claim = self._post("/worker/claim", {"worker_id": self.id}, wait=5)
        assert claim is not None, "nothing to claim"
        run_id = claim["run"]["id"]
        self._post(
            f"/worker/runs/{run_id}/complete",
            {
                "worker_id": self.id,
                "token": claim["token"],
                "status": status,
                "result": {"exit_code": exit_code},
                "error": None if status == "succeeded" else f"exit code {exit_code}",
                "output": output,
            },
        )
        return dict(claim["run"])


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
