"""``GET /api/v1/events`` over real HTTP (uvicorn on a free port, httpx streaming): the SSE
stream delivers new events, resumes after ``Last-Event-ID`` without a gap or a repeat, sends
heartbeats, filters, and never shows a user another user's events. Plus the JSON pages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from api_harness import Api, Caller, api_settings, running_api, wipe
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_api.bootstrap import bind, serve
from scheduler_domain.accounts import Role
from scheduler_infrastructure.config.settings import EventsSettings

pytestmark = pytest.mark.timeout(60)


@dataclass
class Served:
    api: Api
    http: httpx.AsyncClient


@asynccontextmanager
async def served(
    engine: AsyncEngine, *, heartbeat: float = 30.0, poll: float = 0.05, token_ttl: int = 900
) -> AsyncIterator[Served]:
    base = api_settings()
    settings = replace(
        base,
        api=replace(base.api, access_token_ttl_seconds=token_ttl),
        events=EventsSettings(heartbeat_seconds=heartbeat, poll_seconds=poll),
    )
    async with running_api(engine, settings=settings) as api:
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        stop = asyncio.Event()
        server = asyncio.create_task(serve(api.app, stop=stop, sock=sock))
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(10.0)
            ) as http:
                yield Served(api, http)
        finally:
            stop.set()
            await server


class Stream:
    """The messages of one SSE response: ``{"id", "event", "data"}`` or ``{"comment"}``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def message(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._message(), timeout)

    async def _message(self) -> dict[str, Any]:
        message: dict[str, Any] = {}
        async for line in self._lines:
            if line == "":
                if message:
                    return message
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                message["comment"] = value
            elif name == "data":
                message["data"] = json.loads(value)
            else:
                message[name] = value
        raise EOFError("the stream ended")

    async def event(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next event, heartbeats and the retry hint skipped."""
        while True:
            message = await self.message(timeout)
            if "data" in message:
                return message

    async def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [await self.event(timeout) for _ in range(count)]


@asynccontextmanager
async def stream(
    served: Served, caller: Caller, params: dict[str, Any] | None = None, **headers: str
) -> AsyncIterator[Stream]:
    async with served.http.stream(
        "GET", "/api/v1/events", params=params, headers={**caller.headers, **headers}
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


@pytest.fixture
async def engine(sqlite_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    yield sqlite_engine
    await wipe(sqlite_engine)


async def json_page(served: Served, caller: Caller, **params: Any) -> dict[str, Any]:
    response = await served.http.get("/api/v1/events/page", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_stream_resumes_after_last_event_id_without_gap_or_repeat(
    engine: AsyncEngine,
) -> None:
    async with served(engine) as s:
        alice = await s.api.user("alice")
        task = await s.api.task(alice, "nightly")
        async with stream(s, alice, {"task_id": task["id"]}) as events:
            run = await s.api.run(alice, task["id"])
            first = await events.events(2)
        assert [e["event"] for e in first] == ["run.pending", "run.queued"]
        assert {e["data"]["run_id"] for e in first} == {run["id"]}
        assert first[0]["id"] == first[0]["data"]["cursor"]

        # While nobody listens: another run, a pause, a resume.
        await s.api.run(alice, task["id"])
        paused = await s.http.post(f"/api/v1/tasks/{task['id']}/pause", headers=alice.headers)
        assert paused.status_code == 200, paused.text
        await s.http.post(f"/api/v1/tasks/{task['id']}/resume", headers=alice.headers)

        async with stream(
            s, alice, {"task_id": task["id"], "after": "0-0"}, **{"Last-Event-ID": first[-1]["id"]}
        ) as events:
            missed = await events.events(4)
        assert [e["event"] for e in missed] == [
            "run.pending",
            "run.queued",
            "task.paused",
            "task.resumed",
        ]
        everything = (await json_page(s, alice, task_id=task["id"]))["items"]
        assert everything[0]["kind"] == "task.created"
        assert [e["cursor"] for e in everything[1:]] == [e["id"] for e in first + missed]


async def test_a_user_never_sees_another_users_events(engine: AsyncEngine) -> None:
    async with served(engine) as s:
        alice = await s.api.user("alice")
        bob = await s.api.user("bob")
        admin = await s.api.user("root", Role.ADMIN)
        async with (
            stream(s, bob, {"after": "0-0"}) as bobs,
            stream(s, admin, {"after": "0-0"}) as admins,
        ):
            secret = await s.api.task(alice, "alice-only")
            await s.api.run(alice, secret["id"])
            mine = await s.api.task(bob, "bobs")
            seen_by_bob = await bobs.event()
            seen_by_admin = await admins.events(4)
        assert seen_by_bob["data"]["task_id"] == mine["id"]
        assert seen_by_bob["event"] == "task.created"
        assert [e["data"]["task_id"] for e in seen_by_admin] == [secret["id"]] * 3 + [mine["id"]]

        page = await json_page(s, bob, after="0-0")
        assert {e["task_id"] for e in page["items"]} == {mine["id"]}
        for params in ({"task_id": secret["id"]}, {"run_id": seen_by_admin[1]["data"]["run_id"]}):
            for path in ("/api/v1/events/page", "/api/v1/events"):
                refused = await s.http.get(path, params=params, headers=bob.headers)
                assert refused.status_code == 404, refused.text

        # Deleted, the task is gone, but its owner still reads that it was deleted; bob doesn't.
        deleted = await s.http.delete(f"/api/v1/tasks/{secret['id']}", headers=alice.headers)
        assert deleted.status_code == 204, deleted.text
        kinds = [e["kind"] for e in (await json_page(s, alice))["items"]]
        assert kinds == ["task.created", "task.deleted"]  # the runs went with the task
        assert {e["task_id"] for e in (await json_page(s, bob))["items"]} == {mine["id"]}


async def test_heartbeats_keep_a_quiet_stream_alive(engine: AsyncEngine) -> None:
    async with served(engine, heartbeat=0.2) as s:
        alice = await s.api.user("alice")
        async with stream(s, alice) as events:
            comments = [await events.message(5) for _ in range(3)]
        assert [m.get("comment") for m in comments if "retry" not in m][:2] == [
            "heartbeat",
            "heartbeat",
        ]


async def test_a_stream_ends_with_its_access_token_and_a_logged_out_caller_cannot_resume(
    engine: AsyncEngine,
) -> None:
    """Credentials are checked when a stream starts; so a stream lasts no longer than an
    access token lives (then the client reconnects after its last event)."""
    async with served(engine, token_ttl=2, heartbeat=0.5) as s:
        alice = await s.api.user("alice")
        task = await s.api.task(alice)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with stream(s, alice, {"after": "0-0"}) as events:
            created = await events.event()
            with pytest.raises(EOFError):
                await drain(events)
        assert 1.5 < loop.time() - began < 10
        assert created["data"]["task_id"] == task["id"]
        out = await s.http.post(
            "/api/v1/auth/logout", json={"refresh_token": alice.tokens["refresh_token"]}
        )
        assert out.status_code == 204, out.text
        again = await s.http.get(
            "/api/v1/events", headers={**alice.headers, "Last-Event-ID": created["id"]}
        )
        assert again.status_code == 401, again.text


async def drain(events: Stream) -> None:
    while True:
        await events.message(timeout=10)


async def test_filters_by_type_and_status(engine: AsyncEngine) -> None:
    async with served(engine) as s:
        alice = await s.api.user("alice")
        task = await s.api.task(alice)
        async with (
            stream(s, alice, {"type": ["task.paused", "run.queued"]}) as by_type,
            stream(s, alice, {"status": "pending"}) as by_status,
        ):
            run = await s.api.run(alice, task["id"])
            await s.http.post(f"/api/v1/tasks/{task['id']}/pause", headers=alice.headers)
            typed = await by_type.events(2)
            status = await by_status.event()
        assert [e["event"] for e in typed] == ["run.queued", "task.paused"]
        assert status["event"] == "run.pending"
        assert status["data"]["run_id"] == run["id"]


async def test_json_pages_are_keyset_and_bad_input_names_the_field(engine: AsyncEngine) -> None:
    async with served(engine) as s:
        alice = await s.api.user("alice")
        for n in range(3):
            await s.api.task(alice, f"t{n}")
        cursor, names = "0-0", []
        while True:
            page = await json_page(s, alice, after=cursor, limit=2)
            if not page["items"]:
                assert page["next_cursor"] == cursor
                break
            names += [e["subject"] for e in page["items"]]
            cursor = page["next_cursor"]
        assert names == ["task:t0", "task:t1", "task:t2"]
        for params, headers, field in (
            ({"after": "yesterday"}, {}, "after"),
            ({}, {"Last-Event-ID": "1-x"}, "Last-Event-ID"),
            ({"type": "Not A Kind"}, {}, "kind"),
        ):
            paths = ("/api/v1/events",) if headers else ("/api/v1/events/page", "/api/v1/events")
            for path in paths:
                response = await s.http.get(
                    path, params=params, headers={**alice.headers, **headers}
                )
                assert 400 <= response.status_code < 500, response.text
                assert response.json().get("field") == field, response.text


@pytest.mark.postgres
async def test_postgres_stream_starts_at_the_present_and_delivers_promptly(
    postgres_engine: AsyncEngine,
) -> None:
    try:
        async with served(postgres_engine, poll=0.1) as s:
            alice = await s.api.user("alice")
            task = await s.api.task(alice)
            async with stream(s, alice, {"task_id": task["id"], "type": "task.paused"}) as events:
                await s.http.post(f"/api/v1/tasks/{task['id']}/pause", headers=alice.headers)
                paused = await events.event(timeout=5)
            assert paused["event"] == "task.paused"
            page = await json_page(s, alice, task_id=task["id"])
            assert [e["kind"] for e in page["items"]] == ["task.created", "task.paused"]
            assert paused["id"] == page["items"][-1]["cursor"]
    finally:
        await wipe(postgres_engine)


async def test_a_team_viewer_follows_the_teams_events_until_removed(engine: AsyncEngine) -> None:
    """The stream applies the team rule to every page it reads, with the caller's memberships
    as they are now: removed from a team, the open stream shows its events no more; added to
    another, it shows that one's."""
    async with served(engine) as s:
        alice = await s.api.user("alice")
        vera = await s.api.user("vera", Role.VIEWER)
        mallory = await s.api.user("mallory")
        made = await s.http.post("/api/v1/teams", json={"name": "ops"}, headers=alice.headers)
        assert made.status_code == 201, made.text
        added = await s.http.post(
            "/api/v1/teams/ops/members",
            json={"user": "vera", "role": "viewer"},
            headers=alice.headers,
        )
        assert added.status_code == 200, added.text
        async with (
            stream(s, vera, {"after": "0-0"}) as veras,
            stream(s, mallory, {"after": "0-0"}) as mallorys,
        ):
            private = await s.api.task(alice, "private")
            shared = await s.api.task(alice, "shared", team="ops")
            seen = await veras.event()
            assert seen["data"]["task_id"] == shared["id"]
            assert seen["event"] == "task.created"
            mine = await s.api.task(mallory, "mallorys")
            assert (await mallorys.event())["data"]["task_id"] == mine["id"]
            refused = await s.http.get(
                "/api/v1/events", params={"task_id": private["id"]}, headers=vera.headers
            )
            assert refused.status_code == 404

            removed = await s.http.delete("/api/v1/teams/ops/members/vera", headers=alice.headers)
            assert removed.status_code == 200, removed.text
            await s.api.run(alice, shared["id"])  # ops' events: no longer vera's
            other = await s.http.post("/api/v1/teams", json={"name": "ops2"}, headers=alice.headers)
            assert other.status_code == 201, other.text
            joined = await s.http.post(
                "/api/v1/teams/ops2/members",
                json={"user": "vera", "role": "viewer"},
                headers=alice.headers,
            )
            assert joined.status_code == 200, joined.text
            later = await s.api.task(alice, "later", team="ops2")
            # The open stream skips ops' run and shows the new team's task at once.
            nxt = await veras.event()
            assert nxt["data"]["task_id"] == later["id"], nxt
