"""Deployment files parse and describe what the docs promise."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_defines_backing_services_with_healthchecks_and_volumes() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "rabbitmq", "redis"} <= set(services)
    for name in ("postgres", "rabbitmq", "redis"):
        assert "healthcheck" in services[name], name
        volumes = services[name].get("volumes", [])
        assert volumes, name
        named = volumes[0].split(":")[0]
        assert named in compose["volumes"], name
    assert "management" in services["rabbitmq"]["image"]
