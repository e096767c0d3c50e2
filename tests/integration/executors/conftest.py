"""Shared pieces of the executor tests: a context builder and a real HTTP server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from scheduler_application.ports.executor import ExecutionContext

ContextFactory = Callable[..., ExecutionContext]


@pytest.fixture
def context_for() -> ContextFactory:
    def build(params: dict[str, Any], *, timeout: float | None = None) -> ExecutionContext:
        return ExecutionContext(
            run_id="run-42", task_id="task-7", attempt=3, params=params, timeout_seconds=timeout
        )

    return build


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpServer:
    base_url: str
    requests: list[RecordedRequest] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    """/ok, /status/<code>, /slow, /big, /echo, /redirect?to=<url> (302 there), /chain/<n>
    (302 to /chain/<n-1>, /chain/0 answers 200) — whatever the method."""

    server: _RecordingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.record.requests.append(
            RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
        )
        if self.path == "/ok":
            self._reply(200, b"hello from the server")
        elif self.path.startswith("/status/"):
            code = int(self.path.rsplit("/", 1)[1])
            self._reply(code, f"status {code}".encode())
        elif self.path == "/slow":
            time.sleep(3)
            self._reply(200, b"too late")
        elif self.path == "/big":
            self._reply(200, b"x" * 100_000)
        elif self.path == "/echo":
            echoed = {"method": self.command, "body": body.decode()}
            self._reply(200, json.dumps(echoed).encode(), "application/json")
        elif self.path.startswith("/redirect?"):
            target = parse_qs(urlsplit(self.path).query)["to"][0]
            self._reply(302, b"moved", location=target)
        elif self.path.startswith("/chain/"):
            hops = int(self.path.rsplit("/", 1)[1])
            if hops:
                self._reply(302, b"moved", location=f"/chain/{hops - 1}")
            else:
                self._reply(200, b"end of the chain")
        else:
            self._reply(404, b"not found")

    def _reply(
        self,
        code: int,
        body: bytes,
        content_type: str = "text/plain",
        *,
        location: str | None = None,
    ) -> None:
        try:
            self.send_response(code)
            if location is not None:
                self.send_header("Location", location)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True
    record: HttpServer


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    server = _RecordingServer(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    server.record = HttpServer(base_url=f"http://{host}:{port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.record
    finally:
        server.shutdown()
        server.server_close()
