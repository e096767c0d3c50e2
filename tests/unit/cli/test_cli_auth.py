"""Logging in and out, keeping the tokens safe, renewing them, and API keys."""

from __future__ import annotations

import json
import stat

import httpx
import pytest
from cli_harness import ADMIN, API_URL, PASSWORD, Cli, closed_port

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)


def _stored(cli: Cli) -> dict:
    return json.loads(cli.credentials.read_text())


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def test_login_keeps_the_tokens_in_a_file_only_its_owner_can_read(cli: Cli) -> None:
    result = cli.login()

    assert f"logged in to {API_URL} as admin (admin)" in result.stdout
    mode = stat.S_IMODE(cli.credentials.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(cli.credentials.parent.stat().st_mode) == 0o700
    stored = _stored(cli)
    assert stored["default"] == API_URL
    session = stored["sessions"][API_URL]
    assert session["username"] == ADMIN
    assert session["role"] == "admin"
    assert session["access_token"]
    assert session["refresh_token"]


def test_login_prompts_for_the_password_without_echoing_it(cli: Cli) -> None:
    result = cli("login", "-u", ADMIN, input=PASSWORD + "\n")

    assert result.exit_code == 0, result.stderr
    assert PASSWORD not in result.output


def test_login_with_bad_credentials_is_one_error_line(cli: Cli) -> None:
    result = cli("login", "-u", ADMIN, "--password-stdin", input="wrong password\n")

    assert result.exit_code == 1
    assert _one_error_line(result.stderr) == "error: invalid username or password"
    assert result.stdout == ""
    assert not cli.credentials.exists()


def test_password_stdin_needs_a_username(cli: Cli) -> None:
    result = cli("login", "--password-stdin", input=PASSWORD + "\n")

    assert result.exit_code == 1
    assert "--username" in _one_error_line(result.stderr)


def test_login_json_says_who_and_where(cli: Cli) -> None:
    result = cli("login", "-u", ADMIN, "--password-stdin", "--json", input=PASSWORD + "\n")

    answer = json.loads(result.stdout)
    assert answer["api_url"] == API_URL
    assert answer["role"] == "admin"
    assert answer["credentials"] == str(cli.credentials)


def test_commands_without_a_login_say_how_to_log_in(cli: Cli) -> None:
    result = cli("tasks", "list")

    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert f"not logged in to {API_URL}" in line
    assert "scheduler login" in line


def test_an_unreachable_server_is_named_with_the_reason(cli: Cli) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    cli.transport = None  # type: ignore[assignment]  # the real network

    result = cli("--api-url", url, "tasks", "list")

    assert result.exit_code == 1
    assert _one_error_line(result.stderr) == f"error: cannot reach {url}: connection refused"


def test_an_expired_access_token_is_renewed_with_the_refresh_token(admin: Cli) -> None:
    before = _stored(admin)
    before["sessions"][API_URL]["access_expires_at"] = 0
    admin.credentials.write_text(json.dumps(before))

    result = admin("tasks", "list", "--json")

    assert result.exit_code == 0, result.stderr
    after = _stored(admin)["sessions"][API_URL]
    assert after["access_token"] != before["sessions"][API_URL]["access_token"]
    assert after["refresh_token"] != before["sessions"][API_URL]["refresh_token"]
    assert stat.S_IMODE(admin.credentials.stat().st_mode) == 0o600
    refreshes = [p for _, p in admin.transport.requests if p.endswith("/auth/refresh")]
    assert len(refreshes) == 1


def test_a_refused_access_token_is_renewed_once_and_the_request_repeated(admin: Cli) -> None:
    stored = _stored(admin)
    stored["sessions"][API_URL]["access_token"] = "not-a-valid-token"
    admin.credentials.write_text(json.dumps(stored))

    result = admin("tasks", "list", "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert _stored(admin)["sessions"][API_URL]["access_token"] != "not-a-valid-token"


def test_a_revoked_session_is_forgotten_and_asks_for_a_new_login(admin: Cli) -> None:
    stored = _stored(admin)
    session = stored["sessions"][API_URL]
    session["access_expires_at"] = 0
    session["refresh_token"] = "spent-or-revoked"
    admin.credentials.write_text(json.dumps(stored))

    result = admin("tasks", "list")

    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "expired or was revoked" in line
    assert "scheduler login" in line
    assert API_URL not in _stored(admin)["sessions"]


def test_logout_revokes_the_refresh_token_and_forgets_the_session(admin: Cli) -> None:
    refresh_token = _stored(admin)["sessions"][API_URL]["refresh_token"]

    result = admin("logout")

    assert result.exit_code == 0, result.stderr
    assert f"logged out of {API_URL}" in result.stdout
    assert _stored(admin) == {"default": API_URL, "sessions": {}}
    with httpx.Client(transport=admin.transport, base_url=API_URL) as http:
        answer = http.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert answer.status_code == 401


def test_logout_without_a_session_is_harmless(cli: Cli) -> None:
    result = cli("logout")

    assert result.exit_code == 0
    assert "not logged in" in result.stderr


def test_an_api_key_from_the_environment_needs_no_login(admin: Cli) -> None:
    issued = admin("api-keys", "issue", "ci", "--role", "operator", "--json")
    key = json.loads(issued.stdout)["key"]
    admin("logout")

    result = admin("tasks", "list", "--json", env={"SCHEDULER_API_KEY": key})

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_a_viewer_is_refused_with_the_servers_reason(cli: Cli) -> None:
    cli.api.user("vera", Role.VIEWER)
    cli.login("vera")

    result = cli("tasks", "create", "--name", "x", "--executor", "noop")

    assert result.exit_code == 1
    assert _one_error_line(result.stderr).startswith("error: ")


def test_the_config_directory_follows_xdg_config_home(cli: Cli, tmp_path) -> None:
    other = tmp_path / "elsewhere"
    result = cli(
        "login",
        "-u",
        ADMIN,
        "--password-stdin",
        input=PASSWORD + "\n",
        env={"XDG_CONFIG_HOME": str(other)},
    )

    assert result.exit_code == 0, result.stderr
    assert (other / "scheduler" / "credentials.json").exists()
    assert not cli.credentials.exists()


def test_without_xdg_config_home_the_tokens_go_to_dot_config(cli: Cli, tmp_path) -> None:
    home = tmp_path / "home"
    result = cli(
        "login",
        "-u",
        ADMIN,
        "--password-stdin",
        input=PASSWORD + "\n",
        env={"XDG_CONFIG_HOME": "", "HOME": str(home)},
    )

    assert result.exit_code == 0, result.stderr
    assert (home / ".config" / "scheduler" / "credentials.json").exists()


NEW_PASSWORD = "a different long password"


def test_password_changes_it_and_keeps_this_session_with_the_new_tokens(admin: Cli) -> None:
    before = _stored(admin)["sessions"][API_URL]

    result = admin("password", "--passwords-stdin", input=f"{PASSWORD}\n{NEW_PASSWORD}\n")

    assert result.exit_code == 0, result.stderr
    assert "password changed" in result.stdout
    after = _stored(admin)["sessions"][API_URL]
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]
    assert admin("users", "list").exit_code == 0
    with httpx.Client(transport=admin.transport, base_url=API_URL) as http:
        old_access = http.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {before['access_token']}"}
        )
        old_login = http.post("/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD})
        new_login = http.post(
            "/api/v1/auth/login", json={"username": ADMIN, "password": NEW_PASSWORD}
        )
    assert old_access.status_code == 401
    assert old_login.status_code == 401
    assert new_login.status_code == 200


def test_password_prompts_hidden_and_asks_for_the_new_one_twice(admin: Cli) -> None:
    result = admin("password", input=f"{PASSWORD}\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n")

    assert result.exit_code == 0, result.stderr
    assert PASSWORD not in result.output
    assert NEW_PASSWORD not in result.output
    admin.login(password=NEW_PASSWORD)


def test_password_with_a_wrong_current_one_is_one_error_line(admin: Cli) -> None:
    result = admin("password", "--passwords-stdin", input=f"wrong password\n{NEW_PASSWORD}\n")

    assert result.exit_code != 0
    assert "current password is wrong" in _one_error_line(result.stderr)
    admin.login()


def test_password_names_a_weak_new_one(admin: Cli) -> None:
    result = admin("password", "--passwords-stdin", input=f"{PASSWORD}\nshort\n")

    assert result.exit_code != 0
    assert "new_password" in _one_error_line(result.stderr)
