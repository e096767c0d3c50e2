"""Users, API keys, workers, queues and status, against the real API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cli_harness import Cli, RemoteWorker

pytestmark = pytest.mark.timeout(60)


def _json(result) -> Any:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_admins_create_list_and_change_users(admin: Cli) -> None:
    created = _json(
        admin(
            "users",
            "create",
            "alice",
            "--role",
            "operator",
            "--password-stdin",
            "--json",
            input="a long password 1\n",
        )
    )
    changed = _json(admin("users", "update", "alice", "--role", "viewer", "--disable", "--json"))
    listed = _json(admin("users", "list", "--json"))

    assert created["role"] == "operator"
    assert changed["role"] == "viewer"
    assert changed["disabled"] is True
    assert sorted(u["username"] for u in listed) == ["admin", "alice"]
    assert "alice" in admin("users", "list").stdout


def test_a_created_user_can_log_in_and_a_reset_password_replaces_theirs(admin: Cli) -> None:
    admin("users", "create", "bob", "--password-stdin", input="first password 1\n")

    reset = admin("users", "reset-password", "bob", "--password-stdin", input="second password 2\n")
    old = admin("login", "-u", "bob", "--password-stdin", input="first password 1\n")
    new = admin("login", "-u", "bob", "--password-stdin", input="second password 2\n")

    assert reset.exit_code == 0, reset.stderr
    assert old.exit_code == 1
    assert new.exit_code == 0, new.stderr


def test_user_admin_names_the_problem(admin: Cli) -> None:
    admin("users", "create", "carol", "--password-stdin", input="a long password 1\n")

    taken = admin("users", "create", "carol", "--password-stdin", input="a long password 1\n")
    unknown = admin("users", "update", "nobody", "--role", "viewer")
    nothing = admin("users", "update", "carol")

    assert taken.exit_code == 1
    assert taken.stderr.startswith("error: ")
    assert unknown.stderr == "error: no user named 'nobody'\n"
    assert "nothing to change" in nothing.stderr


def test_api_keys_are_issued_once_listed_and_revoked_by_name(admin: Cli) -> None:
    issued = admin("api-keys", "issue", "ci", "--role", "operator", "--expires-in", "30d")
    key = issued.stdout.strip()
    listed = _json(admin("api-keys", "list", "--json"))
    revoked = _json(admin("api-keys", "revoke", "ci", "--json"))
    refused = admin("tasks", "list", env={"SCHEDULER_API_KEY": key})

    assert issued.exit_code == 0, issued.stderr
    assert key.startswith("sk_")
    assert "\n" not in key
    assert "shown this once" in issued.stderr
    assert [k["name"] for k in listed] == ["ci"]
    assert listed[0]["expires_at"] is not None
    assert revoked["revoked_at"] is not None
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: ")


def test_an_api_key_cannot_outrank_its_issuer(cli: Cli) -> None:
    from scheduler_domain.accounts import Role

    cli.api.user("uma", Role.USER)
    cli.login("uma")

    result = cli("api-keys", "issue", "sneaky", "--role", "admin")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1


def test_workers_are_listed_and_drained_by_name(admin: Cli, worker: RemoteWorker) -> None:
    listed = _json(admin("workers", "list", "--json"))
    drained = _json(admin("workers", "drain", "test-worker", "--json"))
    table = admin("workers", "list")

    assert [w["name"] for w in listed] == ["test-worker"]
    assert drained["status"] == "draining"
    assert "draining" in table.stdout


def test_queues_show_depth_and_activity(admin: Cli, worker: RemoteWorker) -> None:
    admin("tasks", "create", "--name", "q", "--executor", "noop")
    admin("tasks", "trigger", "q")

    answer = _json(admin("queues", "--json"))
    table = admin("queues")

    default = next(q for q in answer["items"] if q["name"] == "default")
    assert default["queued"] + default["pending"] == 1
    assert "DEPTH" in table.stdout
    assert "default" in table.stdout


def test_status_shows_the_server_and_who_you_are(admin: Cli) -> None:
    report = _json(admin("status", "--json"))
    shown = admin("status")

    assert report["me"]["user"]["username"] == "admin"
    assert report["system"]["api_version"] == "v1"
    assert "admin (admin, via user)" in shown.stdout
