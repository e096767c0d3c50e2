"""Secret redaction and the log formats: what a line may never contain, and what it must."""

from __future__ import annotations

import json
import logging

import pytest

from scheduler_application.log_context import bind, log_context, log_fields, trace_id
from scheduler_infrastructure.config import ApiSettings, DatabaseSettings, Settings
from scheduler_infrastructure.logging_setup import ConsoleFormatter, ContextFilter, JsonFormatter
from scheduler_infrastructure.telemetry.redaction import MARK, SecretRedactor

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.abcdefghijklmnop"
API_KEY = "sk_abcdefghijkl_" + "x" * 43


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Authorization: Bearer abc.def.ghijklmnop", "abc.def.ghijklmnop"),
        ('{"authorization": "Basic dXNlcjpwYXNz"}', "dXNlcjpwYXNz"),
        ("sent bearer 0123456789abcdef to the api", "0123456789abcdef"),
        (f"key={API_KEY}", API_KEY),
        (f"x-api-key: {API_KEY}", API_KEY),
        (f"token is {JWT} ok", JWT),
        ("GET /login?user=bob&password=hunter2xyz&next=/", "hunter2xyz"),
        ('{"password": "correct horse"}', "correct"),
        ("{'client_secret': 'shh-its-secret'}", "shh-its-secret"),
        ("amqp://guest:s3cr3t-pw@rabbit:5672/", "s3cr3t-pw"),
        ("postgresql+asyncpg://app:p%40ss@db/app", "p%40ss"),
        ("refresh_token=abcdefgh12345678", "abcdefgh12345678"),
        ("/callback?token=abcdef123456&state=1", "abcdef123456"),
        ('{"token": "abcdef123456"}', "abcdef123456"),
        ("password: hunter2hunter2", "hunter2hunter2"),
    ],
)
def test_credential_shapes_are_redacted_whatever_their_value(text: str, hidden: str) -> None:
    redacted = SecretRedactor().redact(text)
    assert hidden not in redacted
    assert MARK in redacted


@pytest.mark.parametrize(
    "text",
    [
        "run 0190abcd finished in 1.5 s on worker-1 (queue default, token 7)",
        "refused a token: DecodeError",
        "outcome refused: fencing token: 3 is stale",
        "the basic idea",
        "skipped: password policy changed",
    ],
)
def test_plain_text_is_left_alone(text: str) -> None:
    assert SecretRedactor().redact(text) == text


def test_configured_secrets_are_redacted_by_value_also_url_encoded() -> None:
    settings = Settings(
        database=DatabaseSettings(password="p@ss word!"),
        api=ApiSettings(jwt_secret="a-jwt-secret-" + "z" * 30),
    )
    redactor = SecretRedactor.from_settings(settings, environ={})
    text = "connect p@ss word! / p%40ss%20word%21 / " + "a-jwt-secret-" + "z" * 30
    redacted = redactor.redact(text)
    assert "p@ss word!" not in redacted
    assert "p%40ss%20word%21" not in redacted
    assert "z" * 30 not in redacted


def test_secret_looking_environment_variables_are_redacted_by_value() -> None:
    environ = {
        "DEPLOY_TOKEN": "tok-0123456789",
        "AWS_SECRET_ACCESS_KEY": "AKIAxyzSECRETvalue",
        "SCHEDULER_ADMIN_PASSWORD": "admin-password-1",
        "TOKENIZERS_PARALLELISM": "false",  # a setting, not a secret
        "PIP_KEYRING_PROVIDER": "disabled",
        "HOME": "/root/home-directory",  # not secret-looking
        "SHORT_KEY": "abc",  # too short to hide by value
    }
    redactor = SecretRedactor.from_settings(Settings(), environ=environ)
    text = " ".join(environ.values())
    redacted = redactor.redact(text)
    for name in ("DEPLOY_TOKEN", "AWS_SECRET_ACCESS_KEY", "SCHEDULER_ADMIN_PASSWORD"):
        assert environ[name] not in redacted
    for kept in ("false", "disabled", "/root/home-directory", "abc"):
        assert kept in redacted


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    record = logging.LogRecord("scheduler.test", logging.WARNING, __file__, 1, message, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    ContextFilter().filter(record)
    return record


def test_console_lines_escape_cr_lf_and_control_characters() -> None:
    formatter = ConsoleFormatter("worker")
    line = formatter.format(_record("task %s", "x\r\n2030-01-01 INFO forged\x1b[31m"))
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert "x\\r\\n2030-01-01 INFO forged\\x1b[31m" in line


def test_console_tracebacks_stay_indented_and_redacted() -> None:
    try:
        raise ValueError("bad password=hunter2hunter2\nINFO forged")
    except ValueError as error:
        record = _record("failed", exc=error)
    line = ConsoleFormatter("api", SecretRedactor()).format(record)
    first, *trace = line.split("\n")
    assert first.endswith("failed")
    assert trace
    assert all(part.startswith("    ") for part in trace)
    assert "hunter2hunter2" not in line


def test_lines_carry_the_bound_run_task_worker_and_trace_ids() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with log_context(run_id="run-1", task_id="task-1", worker_id="w-1"):
        with log_context(trace_id=trace_id(traceparent)):
            record = _record("hello")
        assert "trace_id" not in log_fields()
    assert log_fields() == {}
    entry = json.loads(JsonFormatter("worker").format(record))
    assert entry["run_id"] == "run-1"
    assert entry["task_id"] == "task-1"
    assert entry["worker_id"] == "w-1"
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["component"] == "worker"
    console = ConsoleFormatter("worker").format(record)
    assert console.endswith(
        "[run_id=run-1 task_id=task-1 worker_id=w-1 trace_id=" + entry["trace_id"] + "]"
    )


def test_json_lines_redact_message_extra_fields_and_exceptions() -> None:
    try:
        raise RuntimeError(f"upstream said {JWT}")
    except RuntimeError as error:
        record = _record("calling with %s", f"Bearer {JWT}", exc=error)
    record.headers = {"authorization": f"Bearer {JWT}", "x-api-key": API_KEY}
    line = JsonFormatter("api", SecretRedactor()).format(record)
    assert JWT not in line
    assert API_KEY not in line
    entry = json.loads(line)
    assert MARK in entry["message"]
    assert MARK in entry["exception"]


def test_trace_id_accepts_only_well_formed_traceparents() -> None:
    assert trace_id(None) is None
    assert trace_id("garbage") is None
    assert trace_id("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert trace_id("00-" + "z" * 32 + "-00f067aa0ba902b7-01") is None


def test_bind_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError):
        bind(user="bob")


def test_a_line_written_inside_a_recorded_span_carries_its_trace_id() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from scheduler_infrastructure.telemetry.tracing import OpenTelemetryTracer

    tracer = OpenTelemetryTracer(TracerProvider())
    with tracer.span("POST /api/v1/tasks/{task_id}/trigger") as span:
        record = _record("triggered")
    outside = _record("idle")
    assert span.traceparent is not None
    entry = json.loads(JsonFormatter("api").format(record))
    assert entry["trace_id"] == span.traceparent.split("-")[1]
    assert "trace_id" not in json.loads(JsonFormatter("api").format(outside))
