"""Observability of the real binaries (issue 7): ``scheduler-api``, ``scheduler-dispatcher``
and ``scheduler-worker`` as processes on PostgreSQL.

- Each serves valid Prometheus text: the API on its own port, the dispatcher and the worker on
  their metrics ports, each with the metrics its component records.
- Secrets planted in the environment (JWT secret, database and RabbitMQ passwords, an admin
  password, a ``*_TOKEN`` variable) and in a task's parameters (an API key, a password, a
  bearer token, the database password itself) appear in no log line of any process, in no
  output or error stored on a run, and in no span the processes export (they send OTLP over
  HTTP to a collector the test runs, which keeps every request it receives).
"""

from __future__ import annotations

import gzip
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from harness import Cluster, eventually, free_port
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace endpoint that keeps what it is sent."""

    received: list[ExportTraceServiceRequest]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append(request)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[tuple[int, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape (parsing fails on anything that is not valid exposition)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_binaries_serve_metrics_and_never_log_or_store_planted_secrets(
    cluster_factory: Any,
    uow_factory: SqlUnitOfWorkFactory,
    collector: tuple[int, list[ExportTraceServiceRequest]],
) -> None:
    collector_port, exported = collector
    token = secrets.token_hex(6)
    planted = {
        "jwt_secret": f"planted-jwt-secret-{token}-" + "j" * 24,
        "database_password": f"planted-db-password-{token}",
        "rabbitmq_password": f"planted-amqp-password-{token}",
        "admin_password": f"planted-admin-password-{token}",
        "env_token": f"planted-env-token-{token}",
        "api_key": f"sk_{token}abcdef_" + "K" * 43,
        "param_password": f"planted-param-password-{token}",
        "bearer": f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{token}In0.planted-signature-{token}",
    }
    dispatcher_port, worker_port = free_port(), free_port()
    cluster: Cluster = cluster_factory("postgres")
    cluster.extra_env.update(
        SCHEDULER__DATABASE__PASSWORD=planted["database_password"],
        SCHEDULER__RABBITMQ__PASSWORD=planted["rabbitmq_password"],
        DEPLOY_TOKEN=planted["env_token"],
        SCHEDULER__LOGGING__LEVEL="DEBUG",
        SCHEDULER__DISPATCHER__GAUGE_INTERVAL_SECONDS="0.5",
        SCHEDULER__TELEMETRY__EXPORTER="otlp-http",
        SCHEDULER__TELEMETRY__OTLP_ENDPOINT=f"http://127.0.0.1:{collector_port}",
        # The deployer registers the one callable the python task below names.
        SCHEDULER__EXECUTORS__PYTHON__ALLOW='["logging:warning"]',
    )
    _, client = await cluster.api(
        jwt_secret=planted["jwt_secret"], admin_password=planted["admin_password"]
    )
    # Each request below says who it is; the admin's token is sent only where it is given.
    auth = {"authorization": client.headers.pop("authorization")}
    cluster.dispatcher(SCHEDULER__DISPATCHER__METRICS_PORT=str(dispatcher_port))
    cluster.worker("worker-1", SCHEDULER__WORKER__METRICS_PORT=str(worker_port))

    script = (
        f"echo 'calling https://svc.example/?user=me&password={planted['param_password']}';"
        f"echo 'X-Api-Key: {planted['api_key']}';"
        f"echo 'Authorization: Bearer {planted['bearer']}';"
        f"echo 'db: {planted['database_password']}'"
    )

    # Credentials in places a careless log would print them.
    refused = await client.get(
        f"/api/v1/tasks?password={planted['param_password']}",
        headers={"authorization": f"Bearer {planted['bearer']}"},
    )
    assert refused.status_code == 401
    refused = await client.get("/api/v1/tasks", headers={"x-api-key": planted["api_key"]})
    assert refused.status_code == 401

    # Task code that logs its own secrets (python executor, in a sandboxed interpreter).
    chatty = (
        f"task config password={planted['param_password']} key {planted['api_key']} "
        f"auth Bearer {planted['bearer']} db {planted['database_password']}"
    )
    specs = {
        "leaky": ("shell", {"argv": ["sh", "-c", script]}),
        "leaky-failing": ("shell", {"argv": ["sh", "-c", script + "; exit 3"]}),
        "chatty": ("python", {"callable": "logging:warning", "args": [chatty]}),
    }
    run_ids: dict[str, str] = {}
    task_ids: dict[str, str] = {}
    for name, (executor, params) in specs.items():
        task = await client.post(
            "/api/v1/tasks",
            headers=auth,
            json={"name": name, "executor": executor, "params": params},
        )
        assert task.status_code == 201, task.text
        task_ids[name] = task.json()["id"]
        run = await client.post(f"/api/v1/tasks/{task_ids[name]}/trigger", headers=auth)
        assert run.status_code == 201, run.text
        run_ids[name] = run.json()["id"]

    async def finished() -> bool:
        statuses = {
            name: (await client.get(f"/api/v1/runs/{run_id}", headers=auth)).json()["status"]
            for name, run_id in run_ids.items()
        }
        return statuses == {
            "leaky": "succeeded",
            "leaky-failing": "dead_lettered",
            "chatty": "succeeded",
        }

    await eventually(finished, timeout=60, interval=0.25)
    shown = [
        (await client.get(f"/api/v1/runs/{run_id}/output", headers=auth)).text
        for run_id in run_ids.values()
    ]

    # Metrics: every process answers valid Prometheus text with its component's metrics.
    api_metrics = _samples((await client.get("/metrics")).text)
    worker_metrics = _samples((await client.get(f"http://127.0.0.1:{worker_port}/metrics")).text)

    async def dispatcher_sees_the_worker() -> dict[Any, float] | None:
        try:
            scrape = await client.get(f"http://127.0.0.1:{dispatcher_port}/metrics")
        except httpx.ConnectError:
            return None  # still starting: nothing needs the dispatcher before this point
        samples = _samples(scrape.text)
        online = _value(samples, "scheduler_workers", status="online")
        return samples if online == 1 else None

    dispatcher_metrics = await eventually(dispatcher_sees_the_worker, timeout=30)

    assert _value(api_metrics, "scheduler_runs_created_total", trigger="manual") == 3
    assert (
        _value(
            api_metrics,
            "scheduler_http_requests_total",
            method="POST",
            route="/api/v1/tasks",
            status="201",
        )
        == 3
    )
    assert _value(worker_metrics, "scheduler_runs_finished_total", status="succeeded") == 2
    assert _value(worker_metrics, "scheduler_runs_finished_total", status="failed") == 1
    assert _value(worker_metrics, "scheduler_dead_lettered_total") == 1
    assert _value(worker_metrics, "scheduler_run_queue_wait_seconds_count") == 3
    assert (
        _value(
            worker_metrics,
            "scheduler_run_duration_seconds_count",
            executor="shell",
            status="failed",
        )
        == 1
    )
    assert ("scheduler_worker_active_runs", ()) in worker_metrics
    assert ("scheduler_queue_depth", (("queue", "default"),)) in dispatcher_metrics
    assert ("scheduler_slots_skipped_total", (("reason", "forbid"),)) in dispatcher_metrics

    # Stored output and errors: redacted before they were written.
    async with uow_factory() as uow:
        stored = [await uow.runs.get(run_id) for run_id in run_ids.values()]
    texts = [json.dumps([r.output, r.error, r.result]) for r in stored if r is not None]
    assert len(texts) == 3
    assert all("[REDACTED]" in text for text in texts[:2])  # the shell runs' output
    # A python task runs in a sandboxed interpreter: its logging is its run's output.
    chatty_output = stored[2].output if stored[2] is not None else None
    assert chatty_output is not None
    assert "task config" in chatty_output
    assert chatty_output.count("[REDACTED]") >= 4

    await cluster.stop_all()
    logs = {process.name: process.output() for process in cluster.processes}
    assert all(logs.values()), "every process logged something"
    for text in logs.values():
        for line in text.splitlines():
            entry = json.loads(line)  # JSON lines only: nothing escaped the formatter
            assert entry["component"], line
    # Not a line of the worker's log (where it could forge entries or reach the worker's own).
    assert not [line for line in logs["worker-1"].splitlines() if "task config" in line]
    for name, text in logs.items():
        for what, secret in planted.items():
            assert secret not in text, f"{what} leaked into the {name} log"
    for what, secret in planted.items():
        for text in (*texts, *shown):
            assert secret not in text, f"{what} stored on a run"

    # Traces: each process exported its spans (flushed at shutdown), the runs' among them, and
    # no span holds a secret — the request URL with a password in its query included.
    spans = [
        (resource_spans.resource, span)
        for request in exported
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    services = {
        attribute.value.string_value
        for resource, _ in spans
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert {"scheduler-api", "scheduler-worker"} <= services
    names = [span.name for _, span in spans]
    assert names.count("run.execute") == 3
    assert "GET /api/v1/tasks" in names  # the refused request with ?password= is in a trace
    for what, secret in planted.items():
        for request in exported:
            assert secret not in str(request), f"{what} leaked into an exported span"
