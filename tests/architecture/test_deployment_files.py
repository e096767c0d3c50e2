"""Deployment files parse and describe what the docs promise."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from scheduler_infrastructure.config import load_settings
from scheduler_infrastructure.config.loader import secret_variable
from scheduler_infrastructure.config.settings import SECRETS

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_backing_services_have_healthchecks_and_named_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    for name in ("postgres", "rabbitmq", "redis"):
        assert "healthcheck" in services[name], name
        named = services[name]["volumes"][0].split(":")[0]
        assert named in compose["volumes"], name
    assert "management" in services["rabbitmq"]["image"]


def test_compose_runs_the_distributed_stack_in_order() -> None:
    services = _compose()["services"]
    assert {"migrate", "api", "dispatcher", "worker-1", "worker-2", "prometheus"} <= set(services)
    assert services["migrate"]["command"] == ["scheduler", "migrate", "upgrade"]
    for name in ("api", "dispatcher", "worker-1", "worker-2"):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "healthcheck" in service, name
    assert services["api"]["command"] == ["scheduler-api"]
    assert services["dispatcher"]["command"] == ["scheduler-dispatcher"]
    assert services["worker-1"]["command"] == ["scheduler-worker"]


#: The settings that are secrets (``SECRETS`` in the settings schema), as variables.
SECRET_VARIABLES = {
    "SCHEDULER__API__JWT_SECRET",
    "SCHEDULER__DATABASE__PASSWORD",
    "SCHEDULER__RABBITMQ__PASSWORD",
    "SCHEDULER__REDIS__PASSWORD",
    "SCHEDULER__SECRETS__KEY",
}
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


def test_the_secret_variables_are_the_settings_secrets() -> None:
    assert {secret_variable(key) for key in SECRETS} == SECRET_VARIABLES


def test_compose_passes_no_secret_as_a_plain_environment_value() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), name
        for variable, value in environment.items():
            assert variable not in SECRET_VARIABLES, f"{name}: {variable} given in clear"
            if SECRET_LOOKING.search(variable) and variable.startswith("SCHEDULER"):
                assert variable.endswith("_FILE"), f"{name}: {variable} looks like a secret"
            if "://" in str(value):
                assert urlsplit(str(value)).password is None, f"{name}: {variable} has a password"


def test_compose_mounts_every_secret_file_it_names() -> None:
    compose = _compose()
    declared = compose["secrets"]
    for secret in declared.values():
        assert secret["file"].startswith("./var/secrets/"), secret  # var/ is never committed
    used: set[str] = set()
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        mounted = set(service.get("secrets") or [])
        for variable, value in environment.items():
            if not variable.endswith("_FILE"):
                continue
            assert variable.removesuffix("_FILE") in SECRET_VARIABLES, (name, variable)
            assert value.startswith("/run/secrets/"), (name, variable)
            secret = value.removeprefix("/run/secrets/")
            assert secret in mounted, f"{name}: {variable} names {secret}, not mounted"
            assert secret in declared, secret
            used.add(secret)
    assert used == set(declared)
    services = compose["services"]
    assert "SCHEDULER__API__JWT_SECRET_FILE" in services["api"]["environment"]
    for name in ("api", "worker-1", "worker-2"):
        assert "SCHEDULER__SECRETS__KEY_FILE" in services[name]["environment"], name
    assert "jwt_secret" not in services["worker-1"].get("secrets", [])
    assert "jwt_secret" not in services["dispatcher"].get("secrets", [])


def test_compose_secrets_script_generates_what_compose_mounts(tmp_path: Path) -> None:
    script = tmp_path / "scripts" / "compose-secrets"
    script.parent.mkdir()
    shutil.copy(ROOT / "scripts" / "compose-secrets", script)
    subprocess.run([str(script)], check=True, capture_output=True, timeout=30)
    for secret in _compose()["secrets"].values():
        path = tmp_path / secret["file"]
        assert path.read_text().strip(), path
    settings = load_settings(
        {
            "SCHEDULER__API__JWT_SECRET_FILE": str(tmp_path / "var/secrets/jwt_secret"),
            "SCHEDULER__SECRETS__KEY_FILE": str(tmp_path / "var/secrets/secrets_key"),
        },
        path=ROOT / "config" / "default.toml",
    )
    assert settings.api.jwt_secret
    assert settings.secrets.key


def test_prometheus_scrapes_every_component() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert {"api:8000", "dispatcher:9101", "worker-1:9102", "worker-2:9102"} <= targets


def test_dockerfile_is_multi_stage() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "uv sync --frozen" in text


def test_every_component_sends_its_traces_to_the_compose_trace_backend() -> None:
    compose = _compose()
    services = compose["services"]
    assert "jaeger" in services
    for name in ("api", "dispatcher", "worker-1", "worker-2"):
        environment = services[name]["environment"]
        assert environment["SCHEDULER__TELEMETRY__EXPORTER"] == "otlp-grpc", name
        assert environment["SCHEDULER__TELEMETRY__OTLP_ENDPOINT"] == "http://jaeger:4317", name
