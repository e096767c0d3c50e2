"""Property-based checks of the live OpenAPI document against a real server: uvicorn on a free
port of 127.0.0.1, with its own SQLite database, driven by schemathesis as an admin.

No operation may answer 5xx, every answer must match its documented status codes, content
type, headers and schema, and what the document forbids (negative data: unknown fields of a
closed object, a cursor of the wrong shape, a password too short...) must be refused.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests
import schemathesis
from api_harness import FAST_HASHER, JWT_SECRET, MAX_BODY, PAGE_CAP, PASSWORD, lenient_throttle
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scheduler_api.bootstrap import bind, build_api, serve
from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.api_keys import ApiKeyService
from scheduler_application.accounts.users import AccountService
from scheduler_domain.accounts import Role
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.settings import ApiSettings, DatabaseSettings
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.queues.memory import MemoryRunQueue
from scheduler_infrastructure.resources import Resources, open_resources

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    allow_header_conformance,
]


@dataclass
class LiveServer:
    base_url: str = ""
    api_key: str = ""
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None


async def _run(server: LiveServer, database: Path) -> None:
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{database}"),
        api=ApiSettings(jwt_secret=JWT_SECRET, max_body_bytes=MAX_BODY, max_page_size=PAGE_CAP),
    )
    server.loop = asyncio.get_running_loop()
    server.stop = asyncio.Event()
    async with open_resources(settings) as resources:
        app = build_api(resources, hasher=FAST_HASHER, throttle=lenient_throttle())
        accounts = AccountService(
            uow_factory=resources.uow_factory, clock=resources.clock, hasher=FAST_HASHER
        )
        admin = await accounts.create_user("root", PASSWORD, Role.ADMIN)
        issued = await ApiKeyService(
            uow_factory=resources.uow_factory, clock=resources.clock
        ).issue(principal=Principal(subject_id=admin.id, role=Role.ADMIN), name="schemathesis")
        server.api_key = issued.secret
        sock = bind("127.0.0.1", 0)
        server.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server.ready.set()
        await serve(app, stop=server.stop, sock=sock)


def _thread(server: LiveServer, database: Path) -> None:
    try:
        upgrade(f"sqlite+aiosqlite:///{database}")
        asyncio.run(_run(server, database))
    except BaseException as error:  # reported to the fixture, which fails the test
        server.error = error
        server.ready.set()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer()
    database = tmp_path_factory.mktemp("schemathesis") / "api.db"
    thread = threading.Thread(target=_thread, args=(server, database), daemon=True)
    thread.start()
    assert server.ready.wait(60), "the server did not start"
    if server.error is not None:
        raise server.error
    yield server
    assert server.loop is not None
    assert server.stop is not None
    server.loop.call_soon_threadsafe(server.stop.set)
    thread.join(30)
    assert not thread.is_alive(), "the server did not stop"


def _document() -> dict[str, Any]:
    """The OpenAPI document the app serves, built without starting it (the schema must exist
    when pytest collects; ``test_the_live_document_is_the_one_tested`` proves they agree)."""
    settings = Settings(api=ApiSettings(jwt_secret=JWT_SECRET, max_page_size=PAGE_CAP))
    resources = Resources(
        settings=settings,
        engine=create_engine("sqlite+aiosqlite:///:memory:"),
        uow_factory=None,  # type: ignore[arg-type]  # never called: nothing is served
        queue=MemoryRunQueue(),
        clock=SystemClock(),
    )
    app = build_api(resources, hasher=FAST_HASHER)
    return dict(json.loads(msgspec.json.encode(app.openapi_schema.to_schema())))


DOCUMENT = _document()
# The SSE stream never ends on its own (until the access token's lifetime): a request/response
# checker would wait on it. Its own tests follow it over real HTTP (test_api_events.py); its JSON
# twin, /api/v1/events/page, with the same parameters and rules, is checked here.
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/api/v1/events", method="GET")
# Both are the default; stated so that a change of default cannot drop the negative cases.
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
# A body over api.max_body_bytes (a heartbeat of more runs than allowed) is refused by size.
schema.config.checks.negative_data_rejection.expected_statuses.append("413")


def test_the_live_document_is_the_one_tested(live_server: LiveServer) -> None:
    served = requests.get(f"{live_server.base_url}/schema/openapi.json", timeout=10).json()

    assert served == DOCUMENT


@pytest.mark.timeout(240)
@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_honours_its_openapi_document(case: Any, live_server: LiveServer) -> None:
    case.call_and_validate(
        base_url=live_server.base_url,
        headers={"Authorization": f"Bearer {live_server.api_key}"},
        checks=CHECKS,
        timeout=60,
    )
