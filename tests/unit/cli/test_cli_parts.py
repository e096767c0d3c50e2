"""The CLI's parts on their own: the credentials file, the client's error messages and token
renewal (against httpx.MockTransport), waiting, task bodies and typed times."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler_cli.client import ApiClient, SessionAuth, normalize_url, transport_reason
from scheduler_cli.credentials import CredentialStore, Session, config_directory
from scheduler_cli.errors import ApiError, BadInput, NotLoggedIn, Unreachable
from scheduler_cli.task_input import TaskFlags, task_body
from scheduler_cli.times import since
from scheduler_cli.waiting import RunWatcher, WaitTimedOut, exit_code

pytestmark = pytest.mark.timeout(30)
URL = "http://api.test"


def _session(**changes: Any) -> Session:
    fields: dict[str, Any] = {
        "api_url": URL,
        "username": "admin",
        "user_id": "u1",
        "role": "admin",
        "access_token": "access-1",
        "access_expires_at": 2e9,
        "refresh_token": "refresh-1",
        "refresh_expires_at": 2e9,
    }
    return Session(**{**fields, **changes})


# -- the credentials file ---------------------------------------------------------------------


def test_the_credentials_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    store = CredentialStore(directory=tmp_path / "scheduler")
    previous = os.umask(0)
    try:
        store.save(_session(), make_default=True)
    finally:
        os.umask(previous)

    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.get(URL) == _session()
    assert store.default_url() == URL


def test_sessions_are_kept_per_server_and_the_default_outlives_a_logout(
    tmp_path: Path,
) -> None:
    store = CredentialStore(directory=tmp_path)
    store.save(_session(), make_default=True)
    store.save(_session(api_url="http://other.test"), make_default=False)

    assert store.default_url() == URL
    assert store.forget(URL) == _session()
    assert store.get(URL) is None
    assert store.get("http://other.test") is not None
    store.forget("http://other.test")
    assert store.default_url() == URL
    assert "refresh-1" not in store.path.read_text()


def test_a_corrupt_credentials_file_says_what_to_do(tmp_path: Path) -> None:
    store = CredentialStore(directory=tmp_path)
    store.path.write_text("{not json")

    with pytest.raises(Exception, match="delete it and log in again"):
        store.get(URL)


def test_config_directory_ignores_a_relative_xdg_config_home() -> None:
    assert config_directory({"XDG_CONFIG_HOME": "/x"}) == Path("/x/scheduler")
    assert config_directory({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.config/scheduler"
    )


# -- the client ----------------------------------------------------------------------------


def _client(handler: Any, auth: httpx.Auth | None = None) -> ApiClient:
    return ApiClient(api_url=URL, auth=auth, transport=httpx.MockTransport(handler))


def test_a_problem_becomes_one_line_naming_the_field() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            422,
            json={"status": 422, "detail": "must be between 1 and 1000\n", "field": "retry.n"},
        )

    with _client(handler) as client, pytest.raises(ApiError) as caught:
        client.get("/tasks")

    assert caught.value.message == "retry.n: must be between 1 and 1000"
    assert caught.value.field == "retry.n"


def test_an_answer_that_is_not_a_problem_still_makes_a_message() -> None:
    bad_gateway = httpx.Response(502, text="<html>bad gateway</html>")
    with (
        _client(lambda request: bad_gateway) as client,
        pytest.raises(ApiError, match="HTTP 502 Bad Gateway"),
    ):
        client.get("/tasks")


def test_throttled_logins_say_when_to_try_again() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"detail": "too many attempts"}, headers={"Retry-After": "60"}
        )

    with _client(handler) as client, pytest.raises(ApiError, match="try again in 60 s"):
        client.post("/auth/login", {})


def test_a_lost_race_says_to_try_again_a_conflict_does_not() -> None:
    def lost(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            409,
            json={"detail": "the run was changed concurrently, try again: deadlock detected"},
            headers={"Retry-After": "1"},
        )

    def moved_on(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"detail": "the run moved on", "field": "version"})

    with _client(lost) as client, pytest.raises(ApiError, match="try again in 1 s"):
        client.post("/tasks/t/trigger", {})
    with _client(moved_on) as client, pytest.raises(ApiError) as caught:
        client.post("/tasks/t/trigger", {})
    assert caught.value.message == "version: the run moved on"


def test_a_server_error_carries_its_incident_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            500, json={"detail": "an unexpected error occurred", "instance": "urn:uuid:1"}
        )

    with _client(handler) as client, pytest.raises(ApiError, match="incident urn:uuid:1"):
        client.get("/system")


def test_no_answer_at_all_is_unreachable_with_the_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("boom") from ConnectionRefusedError(111, "Connection refused")

    with _client(handler) as client, pytest.raises(Unreachable) as caught:
        client.get("/tasks")

    assert caught.value.message == f"cannot reach {URL}: connection refused"


def test_transport_reasons_are_short() -> None:
    assert transport_reason(httpx.ReadTimeout("slow")) == "timed out"
    assert transport_reason(httpx.ConnectError("[Errno -2] Name does not resolve")) == (
        "name does not resolve"
    )


def test_items_follow_cursors_up_to_the_limit() -> None:
    pages = {None: (["a", "b"], "c1"), "c1": (["c", "d"], "c2"), "c2": (["e"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        items, cursor = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"items": items, "next_cursor": cursor, "limit": 2})

    with _client(handler) as client:
        assert list(client.items("/tasks")) == ["a", "b", "c", "d", "e"]
        assert client.page("/tasks", limit=3) == (["a", "b", "c"], True)
        assert client.page("/tasks", limit=5) == (["a", "b", "c", "d", "e"], False)


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("http://h:8000", "http://h:8000"),
        ("http://h:8000/", "http://h:8000"),
        ("http://h:8000/api/v1/", "http://h:8000"),
        (" https://h ", "https://h"),
    ],
)
def test_api_urls_are_reduced_to_the_servers_root(given: str, root: str) -> None:
    assert normalize_url(given) == root


def test_an_api_url_without_a_scheme_is_refused() -> None:
    with pytest.raises(BadInput):
        normalize_url("localhost:8000")


# -- renewing the session --------------------------------------------------------------------


class TokenServer:
    """A fake API that accepts one access token and rotates refresh tokens."""

    def __init__(self) -> None:
        self.valid_access = "access-1"
        self.live_refresh = {"refresh-1"}
        self.refreshes = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/refresh"):
            token = json.loads(request.content)["refresh_token"]
            if token not in self.live_refresh:
                return httpx.Response(401, json={"detail": "invalid"})
            self.live_refresh.discard(token)
            self.refreshes += 1
            self.valid_access = f"access-{self.refreshes + 1}"
            fresh = f"refresh-{self.refreshes + 1}"
            self.live_refresh.add(fresh)
            return httpx.Response(
                200,
                json={
                    "access_token": self.valid_access,
                    "refresh_token": fresh,
                    "expires_in": 900,
                    "refresh_expires_in": 3600,
                    "user_id": "u1",
                    "role": "admin",
                },
            )
        if request.headers.get("Authorization") != f"Bearer {self.valid_access}":
            return httpx.Response(401, json={"detail": "the credentials are invalid"})
        return httpx.Response(200, json={"ok": True})


def test_a_session_renewed_by_another_command_is_used_without_refreshing(tmp_path: Path) -> None:
    store = CredentialStore(directory=tmp_path)
    store.save(_session(access_expires_at=0), make_default=True)
    auth = SessionAuth(store=store, api_url=URL)
    # Meanwhile another command refreshed: the stored pair is new and valid.
    store.save(_session(access_token="access-2", refresh_token="refresh-2"), make_default=True)
    server = TokenServer()
    server.valid_access = "access-2"

    with _client(server, auth) as client:
        assert client.get("/tasks") == {"ok": True}

    assert server.refreshes == 0


def test_a_refreshed_pair_is_saved_at_once(tmp_path: Path) -> None:
    store = CredentialStore(directory=tmp_path)
    store.save(_session(access_token="stale"), make_default=True)
    server = TokenServer()

    with _client(server, SessionAuth(store=store, api_url=URL)) as client:
        assert client.get("/tasks") == {"ok": True}

    saved = store.get(URL)
    assert saved is not None
    assert (saved.access_token, saved.refresh_token) == ("access-2", "refresh-2")
    assert server.refreshes == 1


def test_two_commands_renewing_at_once_spend_the_refresh_token_only_once(
    tmp_path: Path,
) -> None:
    CredentialStore(directory=tmp_path).save(_session(access_expires_at=0), make_default=True)
    server = TokenServer()
    entered = threading.Barrier(2)
    results: list[Any] = []

    def slow_server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/refresh"):
            time.sleep(0.2)  # the other command is waiting for the lock meanwhile
        return server(request)

    def command() -> None:
        store = CredentialStore(directory=tmp_path)  # a process of its own, as it were
        with _client(slow_server, SessionAuth(store=store, api_url=URL)) as client:
            entered.wait()
            results.append(client.get("/tasks"))

    threads = [threading.Thread(target=command) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert results == [{"ok": True}, {"ok": True}]
    assert server.refreshes == 1


def test_an_expired_refresh_token_is_not_sent_and_the_login_is_forgotten(tmp_path: Path) -> None:
    store = CredentialStore(directory=tmp_path)
    store.save(_session(access_expires_at=0, refresh_expires_at=1), make_default=True)
    server = TokenServer()

    with (
        _client(server, SessionAuth(store=store, api_url=URL)) as client,
        pytest.raises(NotLoggedIn, match="has expired"),
    ):
        client.get("/tasks")

    assert server.refreshes == 0
    assert store.get(URL) is None


# -- waiting -----------------------------------------------------------------------------------


class ScriptedRuns:
    """A stand-in for the client: answers ``/runs/{id}`` from a script of statuses."""

    def __init__(self, statuses: list[str], retry: dict[str, Any] | None = None) -> None:
        self.statuses = statuses
        self.retry = retry
        self.polls = 0

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        status = self.statuses[min(self.polls, len(self.statuses) - 1)]
        self.polls += 1
        return _run(status)

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return [self.retry] if self.retry else []


def _run(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "r1",
        "task_id": "t1",
        "status": status,
        "created_at": "2030-01-01T00:00:00Z",
        **fields,
    }


def _watcher(client: Any, **options: Any) -> RunWatcher:
    clock = iter(float(n) for n in range(10_000))
    return RunWatcher(client=client, sleep=lambda s: None, clock=lambda: next(clock), **options)


def test_waiting_polls_until_the_run_ends() -> None:
    client = ScriptedRuns(["queued", "running", "running", "succeeded"])
    seen: list[str] = []

    final = _watcher(client).wait("r1", on_poll=lambda run: seen.append(run["status"]))

    assert final["status"] == "succeeded"
    assert seen == ["queued", "running", "running", "succeeded"]


def test_waiting_gives_up_at_the_timeout() -> None:
    with pytest.raises(WaitTimedOut) as caught:
        _watcher(ScriptedRuns(["running"]), timeout=5).wait("r1")

    assert caught.value.exit_code == 124
    assert "still running after 5s" in caught.value.message


def test_a_failed_attempt_with_a_retry_is_followed() -> None:
    retry = _run("succeeded", id="r2", retry_of="r1", attempt=2)

    final = _watcher(ScriptedRuns(["failed"], retry=retry)).wait("r1")

    assert final["id"] == "r2"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("succeeded", 0),
        ("failed", 1),
        ("timed_out", 1),
        ("lost", 1),
        ("dead_lettered", 1),
        ("cancelled", 2),
    ],
)
def test_exit_codes_say_how_a_run_ended(status: str, code: int) -> None:
    assert exit_code(_run(status)) == code


# -- task bodies and times ------------------------------------------------------------------


def test_flags_override_the_document_and_argv_implies_shell() -> None:
    body = task_body(
        {"name": "x", "params": {"cwd": "/srv"}, "retry": {"base_delay_seconds": 5}},
        TaskFlags(argv="sh -c 'exit 3'", max_attempts=2, params=['env={"A": "1"}']),
    )

    assert body["executor"] == "shell"
    assert body["params"] == {"cwd": "/srv", "env": {"A": "1"}, "argv": ["sh", "-c", "exit 3"]}
    assert body["retry"] == {"base_delay_seconds": 5, "max_attempts": 2}


def test_only_one_schedule_may_be_given() -> None:
    with pytest.raises(BadInput, match="give one schedule"):
        task_body({}, TaskFlags(cron="* * * * *", interval=5))


def test_a_timezone_alone_needs_a_cron_schedule() -> None:
    with pytest.raises(BadInput, match="--timezone"):
        task_body({}, TaskFlags(timezone="UTC"))


def test_no_schedule_clears_it() -> None:
    assert task_body({}, TaskFlags(no_schedule=True)) == {"schedule": None}


def test_since_takes_spans_and_instants() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    assert since("2h", now=now) == "2030-01-01T10:00:00Z"
    assert since("2030-01-01T08:00:00+02:00", now=now) == "2030-01-01T06:00:00Z"
    with pytest.raises(BadInput):
        since("yesterday", now=now)


def test_the_circuits_table_shows_the_runs_each_circuit_holds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scheduler_cli.commands.limits import CIRCUIT_COLUMNS
    from scheduler_cli.output import Output

    circuit = {
        "name": "vendor-api",
        "state": "open",
        "failures": 5,
        "failure_threshold": 5,
        "reopens_at": None,
        "probe_run_id": None,
        "held_runs": 17,
    }
    Output(json_mode=False).table([circuit], CIRCUIT_COLUMNS)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "HELD"
    assert lines[1].split()[-1] == "17"
