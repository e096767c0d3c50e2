"""``scheduler webhooks …`` against the real API: create (secret printed once), list, get,
update, test, deliveries, delete; the outbound policy's refusal shown as an error."""

from __future__ import annotations

import json

import pytest
from cli_harness import Cli

pytestmark = pytest.mark.timeout(60)

#: A name that does not resolve: accepted (not a refused address), its deliveries fail.
URL = "https://hooks.example.invalid/scheduler"


def test_webhook_commands_round_trip(admin: Cli) -> None:
    created = admin("webhooks", "create", URL, "-e", "run.failed", "-e", "task.*", "--json")
    assert created.exit_code == 0, created.stderr
    body = json.loads(created.stdout)
    assert body["secret"].startswith("whsec_")
    hook_id = body["webhook"]["id"]

    plain = admin("webhooks", "list")
    assert plain.exit_code == 0, plain.stderr
    assert hook_id in plain.stdout
    assert "run.failed,task.*" in plain.stdout
    assert body["secret"] not in plain.stdout

    changed = admin("webhooks", "update", hook_id, "--disable", "--description", "ops", "--json")
    assert changed.exit_code == 0, changed.stderr
    assert json.loads(changed.stdout)["enabled"] is False

    shown = admin("webhooks", "get", hook_id)
    assert "ops" in shown.stdout
    assert "no" in shown.stdout

    tested = admin("webhooks", "test", hook_id, "--json")
    assert tested.exit_code == 0, tested.stderr
    assert json.loads(tested.stdout)["status"] == "failed"  # the name does not resolve

    log = admin("webhooks", "deliveries", hook_id, "--json")
    assert [d["event_kind"] for d in json.loads(log.stdout)] == ["webhook.test"]

    assert admin("webhooks", "delete", hook_id).exit_code == 0
    gone = admin("webhooks", "get", hook_id)
    assert gone.exit_code != 0


def test_a_loopback_url_is_refused_with_the_reason(admin: Cli) -> None:
    result = admin("webhooks", "create", "http://127.0.0.1:9000/hook")
    assert result.exit_code != 0
    assert "loopback" in result.stderr
    nothing = admin("webhooks", "update", "not-an-id", "--enable")
    assert nothing.exit_code != 0
