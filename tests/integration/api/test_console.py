"""The console at /ui, server side: sign-in and the session cookie, CSRF and origin checks,
role-aware pages and actions, objects of others (404), and the security headers."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from api_harness import Api, Caller, api_settings, running_api
from console_client import INLINE_SCRIPT, INLINE_STYLE, Browser, browser, csrf_of
from httpx import Response
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_api.console.headers import CONTENT_SECURITY_POLICY
from scheduler_api.console.session import SESSION_COOKIE
from scheduler_domain.accounts import Role
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_infrastructure.persistence.tables import task_runs

PAGES = (
    "/ui",
    "/ui/tasks",
    "/ui/runs",
    "/ui/queues",
    "/ui/workers",
    "/ui/dead-letters",
    "/ui/webhooks",
    "/ui/api-keys",
    "/ui/users",
    "/ui/templates",
    "/ui/templates/new",
    "/ui/limits",
    "/ui/teams",
)


def set_cookie(response_headers: list[str]) -> str:
    cookies = [h for h in response_headers if h.startswith(f"{SESSION_COOKIE}=")]
    assert len(cookies) == 1, response_headers
    return cookies[0]


async def test_root_redirects_to_the_console(api: Api) -> None:
    response = await api.client.get("/")
    assert response.status_code == 302
    assert response.headers["location"] == "/ui"


async def test_pages_send_a_signed_out_visitor_to_the_sign_in_page(api: Api) -> None:
    response = await api.client.get("/ui/runs?status=queued")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fruns%3Fstatus%3Dqueued"


async def test_sign_in_sets_an_http_only_strict_session_cookie(api: Api, admin: Caller) -> None:
    async with browser(api) as visitor:
        response = await visitor.sign_in("root")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui"
    cookie = set_cookie(response.headers.get_list("set-cookie"))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/ui" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP here
    assert "max-age" not in attributes
    assert "expires" not in attributes


async def test_session_cookie_is_secure_over_https(api: Api, admin: Caller) -> None:
    async with browser(api, base_url="https://testserver") as visitor:
        response = await visitor.sign_in("root")
    cookie = set_cookie(response.headers.get_list("set-cookie"))
    assert "secure" in {p.strip().lower() for p in cookie.split(";")}


async def test_session_cookie_is_secure_when_tls_ends_in_front(clean_engine: AsyncEngine) -> None:
    settings = api_settings()
    settings = replace(settings, api=replace(settings.api, console_secure_cookies=True))
    async with running_api(clean_engine, settings=settings) as api:
        await api.user("root", Role.ADMIN)
        async with browser(api) as visitor:
            form = await visitor.client.get("/ui/login")
            pre = form.headers["set-cookie"]
            assert "secure" in {p.strip().lower() for p in pre.split(";")}
            # A browser behind the TLS proxy sends it back; httpx on http:// would not.
            response = await visitor.client.post(
                "/ui/login",
                data={
                    "username": "root",
                    "password": "correct horse battery staple",
                    "csrf_token": csrf_of(form.text),
                },
                headers={"Cookie": pre.split(";")[0]},
            )
    assert response.status_code == 303, response.text
    cookie = set_cookie(response.headers.get_list("set-cookie"))
    assert "secure" in {p.strip().lower() for p in cookie.split(";")}


async def test_wrong_password_shows_the_form_again(api: Api, admin: Caller) -> None:
    async with browser(api) as visitor:
        response = await visitor.sign_in("root", "wrong password")
        assert response.status_code == 401
        assert "Invalid username or password." in response.text
        assert SESSION_COOKIE not in visitor.client.cookies


async def test_sign_in_without_the_form_token_is_refused(api: Api, admin: Caller) -> None:
    async with browser(api) as visitor:
        await visitor.client.get("/ui/login")
        response = await visitor.client.post(
            "/ui/login", data={"username": "root", "password": "correct horse battery staple"}
        )
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


async def test_every_page_renders_with_csp_and_no_inline_script_or_style(
    api: Api, admin: Caller
) -> None:
    task = await api.task(
        admin, "nightly", schedule={"cron": "0 2 * * *", "timezone": "Europe/Paris"}
    )
    run = await api.run(admin, task["id"])
    async with browser(api) as visitor:
        await visitor.sign_in("root")
        for path in (*PAGES, f"/ui/tasks/{task['id']}", f"/ui/runs/{run['id']}", "/ui/login"):
            response = await visitor.page(path)
            assert response.status_code == 200, (path, response.text[:500])
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert "script-src 'self'" in CONTENT_SECURITY_POLICY
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["cache-control"] == "no-store"
            assert not INLINE_SCRIPT.search(response.text), path
            assert not INLINE_STYLE.search(response.text), path
        tasks = (await visitor.page("/ui/tasks")).text
        assert f'<a href="/ui/runs/{run["id"]}" class="dot status-{run["status"]}"' in tasks
        queues = (await visitor.page("/ui/queues")).text
        assert re.search(r'<span title="queued at [^"]+">[0-9.]+ (ms|s) ago</span>', queues)
        task_page = (await visitor.page(f"/ui/tasks/{task['id']}")).text
        assert "every day at 02:00 (Europe/Paris)" in task_page
        assert "CET" in task_page or "CEST" in task_page  # next fires in the task's zone
        static = await visitor.page("/ui/static/console.js")
        assert static.status_code == 200
        assert static.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_error_pages_carry_the_policy_too(api: Api, admin: Caller) -> None:
    async with browser(api) as visitor:
        await visitor.sign_in("root")
        response = await visitor.page("/ui/runs/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert not INLINE_SCRIPT.search(response.text)


async def test_actions_need_the_session_csrf_token(api: Api, admin: Caller, alice: Caller) -> None:
    task = await api.task(admin, "job")
    async with browser(api) as root, browser(api) as other:
        await root.sign_in("root")
        await other.sign_in("alice")
        stranger_token = csrf_of((await other.page("/ui/runs")).text)
        trigger = f"/ui/tasks/{task['id']}/trigger"
        missing = await root.client.post(trigger, data={})
        wrong = await root.client.post(trigger, data={"csrf_token": "x" * 43})
        foreign = await root.client.post(trigger, data={"csrf_token": stranger_token})
        for response in (missing, wrong, foreign):
            assert response.status_code == 403, response.text
            assert "CSRF" in response.text
        runs = await api.client.get(f"/api/v1/tasks/{task['id']}/runs", headers=admin.headers)
        assert runs.json()["items"] == []
        done = await root.act(trigger, on=f"/ui/tasks/{task['id']}")
        assert done.status_code == 303
        assert done.headers["location"].startswith("/ui/runs/")
        header = await root.client.post(
            f"/ui/tasks/{task['id']}/pause",
            headers={"X-CSRF-Token": csrf_of((await root.page("/ui/tasks")).text)},
        )
        assert header.status_code == 303


async def test_the_console_trigger_shares_the_rest_triggers_group_commit(
    api: Api, admin: Caller
) -> None:
    task = await api.task(admin, "grouped")
    services = api.app.dependencies["services"].dependency(None)
    before = services.triggers.groups
    async with browser(api) as root:
        await root.sign_in("root")
        on = f"/ui/tasks/{task['id']}"
        first = await root.act(f"{on}/trigger", on=on, idempotency_key="console-1")
        again = await root.act(f"{on}/trigger", on=on, idempotency_key="console-1")
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]  # the key's replay
    assert services.triggers.groups == before + 2
    runs = await api.client.get(f"/api/v1/tasks/{task['id']}/runs", headers=admin.headers)
    assert len(runs.json()["items"]) == 1


async def test_a_cross_site_post_is_refused_even_with_a_token(api: Api, admin: Caller) -> None:
    task = await api.task(admin, "job")
    async with browser(api) as root:
        await root.sign_in("root")
        token = csrf_of((await root.page("/ui/tasks")).text)
        response = await root.client.post(
            f"/ui/tasks/{task['id']}/trigger",
            data={"csrf_token": token},
            headers={"Origin": "https://evil.example"},
        )
    assert response.status_code == 403
    runs = await api.client.get(f"/api/v1/tasks/{task['id']}/runs", headers=admin.headers)
    assert runs.json()["items"] == []


async def test_a_viewer_sees_no_actions_and_a_forged_post_is_refused(
    api: Api, admin: Caller
) -> None:
    owner = await api.user("vera", Role.USER)
    task = await api.task(owner, "mine")
    run = await api.run(owner, task["id"])
    demoted = await api.client.patch(
        f"/api/v1/users/{owner.id}", json={"role": "viewer"}, headers=admin.headers
    )
    assert demoted.status_code == 200, demoted.text
    async with browser(api) as viewer:
        await viewer.sign_in("vera")
        for path in (f"/ui/tasks/{task['id']}", f"/ui/runs/{run['id']}", "/ui/dead-letters"):
            html = (await viewer.page(path)).text
            assert html.count("<button") == 1, (path, html)  # sign out only
            assert "Sign out" in html
        for action in (
            f"/ui/tasks/{task['id']}/trigger",
            f"/ui/tasks/{task['id']}/pause",
            f"/ui/runs/{run['id']}/cancel",
        ):
            response = await viewer.act(action, on=f"/ui/tasks/{task['id']}")
            assert response.status_code == 403, (action, response.text)
    after = await api.client.get(f"/api/v1/runs/{run['id']}", headers=admin.headers)
    assert after.json()["status"] == run["status"]


async def test_objects_of_others_are_not_found(api: Api, alice: Caller, bob: Caller) -> None:
    task = await api.task(alice, "private")
    run = await api.run(alice, task["id"])
    async with browser(api) as intruder:
        await intruder.sign_in("bob")
        for path in (f"/ui/tasks/{task['id']}", f"/ui/runs/{run['id']}"):
            response = await intruder.page(path)
            assert response.status_code == 404
            assert "private" not in response.text
        cancel = await intruder.act(f"/ui/runs/{run['id']}/cancel", on="/ui/runs")
        assert cancel.status_code == 404
        listing = await intruder.page("/ui/runs")
        assert run["id"][-12:] not in listing.text


async def test_users_page_is_for_admins(api: Api, admin: Caller, alice: Caller) -> None:
    async with browser(api) as user:
        await user.sign_in("alice")
        assert (await user.page("/ui/users")).status_code == 403
        assert 'href="/ui/users"' not in (await user.page("/ui")).text


async def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(
    api: Api, admin: Caller
) -> None:
    async with browser(api) as visitor, browser(api) as thief:
        await visitor.sign_in("root")
        stolen = visitor.client.cookies[SESSION_COOKIE]
        thief.client.cookies.set(SESSION_COOKIE, stolen, path="/ui")
        assert (await thief.page("/ui/runs")).status_code == 200
        out = await visitor.act("/ui/logout", on="/ui")
        assert out.status_code == 303
        assert out.headers["location"] == "/ui/login"
        assert SESSION_COOKIE not in visitor.client.cookies
        # Both the access token and the refresh token in the copy are dead now.
        assert (await thief.page("/ui/runs")).status_code == 303


async def test_a_password_change_ends_console_sessions(api: Api, alice: Caller) -> None:
    async with browser(api) as visitor:
        await visitor.sign_in("alice")
        assert (await visitor.page("/ui/runs")).status_code == 200
        changed = await api.client.post(
            "/api/v1/auth/password",
            json={
                "current_password": "correct horse battery staple",
                "new_password": "another long passphrase 42",
            },
            headers=alice.headers,
        )
        assert changed.status_code == 200, changed.text
        assert (await visitor.page("/ui/runs")).status_code == 303


def _with_expired_access(cookie: str) -> str:
    _access, refresh, session_id = cookie.strip('"').split("~")
    return f"expired.access.token~{refresh}~{session_id}"


async def test_an_expired_access_token_is_refreshed_once_for_concurrent_requests(
    api: Api, admin: Caller
) -> None:
    async with browser(api) as visitor:
        await visitor.sign_in("root")
        stale = _with_expired_access(visitor.client.cookies[SESSION_COOKIE])
        visitor.client.cookies.set(SESSION_COOKIE, stale, path="/ui")
        answers = await asyncio.gather(*(visitor.page("/ui/runs") for _ in range(4)))
        assert [a.status_code for a in answers] == [200] * 4
        renewed = {set_cookie(a.headers.get_list("set-cookie")).split(";")[0] for a in answers}
        assert len(renewed) == 1  # one refresh, shared; the family was not revoked as reused
        visitor.client.cookies.set(SESSION_COOKIE, renewed.pop().split("=", 1)[1], path="/ui")
        assert (await visitor.page("/ui/runs")).status_code == 200


async def test_bad_filters_name_the_field(api: Api, admin: Caller) -> None:
    async with browser(api) as visitor:
        await visitor.sign_in("root")
        response = await visitor.page("/ui/runs?status=exploded")
    assert response.status_code == 422
    assert "status must be one of" in response.text


async def test_the_runs_page_and_its_bulk_confirmation_filter_by_queue(
    api: Api, admin: Caller
) -> None:
    plain = await api.task(admin, "plain")
    reports = await api.task(admin, "reports", queue="reports")
    outside = await api.run(admin, plain["id"])
    inside = [await api.run(admin, reports["id"]) for _ in range(2)]
    async with browser(api) as visitor:
        await visitor.sign_in("root")
        listed = (await visitor.page("/ui/runs?queue=reports")).text
        confirm = (await visitor.page("/ui/runs/bulk?action=cancel&queue=reports")).text
        bad = await visitor.page("/ui/runs?queue=a%20b")
    assert all(f'data-run-id="{r["id"]}"' in listed for r in inside)
    assert f'data-run-id="{outside["id"]}"' not in listed
    assert 'id="f-queue" name="queue" value="reports"' in listed
    assert "Cancel 2 runs?" in confirm
    assert '<input type="hidden" name="queue" value="reports">' in confirm
    assert bad.status_code == 422
    assert "queue must be" in bad.text


async def test_an_api_key_is_shown_once_and_can_be_revoked(api: Api, alice: Caller) -> None:
    async with browser(api) as visitor:
        await visitor.sign_in("alice")
        issued = await visitor.act("/ui/api-keys", on="/ui/api-keys", name="ci")
        assert issued.status_code == 201
        assert "sk_" in issued.text
        assert issued.headers["cache-control"] == "no-store"
        listing = await api.client.get("/api/v1/api-keys", headers=alice.headers)
        key = listing.json()["items"][0]
        revoked = await visitor.act(f"/ui/api-keys/{key['id']}/revoke", on="/ui/api-keys")
        assert revoked.status_code == 303
        after = await api.client.get(f"/api/v1/api-keys/{key['id']}", headers=alice.headers)
        assert after.json()["revoked_at"] is not None


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/ui",
        "//evil.example/ui",
        "/ui//evil.example",
        "/api/v1/x",
        "/ui\\evil",
        "/ui/runs\r\nSet-Cookie: x=1",
        "/uievil",
    ],
)
async def test_sign_in_only_returns_to_console_pages(api: Api, admin: Caller, target: str) -> None:
    async with browser(api) as visitor:
        form = await visitor.client.get("/ui/login", params={"next": target})
        response = await visitor.client.post(
            "/ui/login",
            data={
                "username": "root",
                "password": "correct horse battery staple",
                "csrf_token": csrf_of(form.text),
                "next": target,
            },
        )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui"


async def test_bulk_cancel_states_the_count_then_cancels_what_matches(
    api: Api, admin: Caller, alice: Caller
) -> None:
    mine = await api.task(admin, "mine")
    other = await api.task(admin, "other")
    runs = [await api.run(admin, mine["id"]) for _ in range(3)]
    untouched = await api.run(admin, other["id"])
    async with browser(api) as root:
        await root.sign_in("root")
        confirm = await root.page(f"/ui/runs/bulk?action=cancel&task_id={mine['id']}")
        assert confirm.status_code == 200
        assert "Cancel 3 runs?" in confirm.text
        done = await root.act(
            "/ui/runs/bulk",
            on=f"/ui/runs/bulk?action=cancel&task_id={mine['id']}",
            action="cancel",
            task_id=mine["id"],
        )
        assert done.status_code == 200, done.text
        assert "Cancelled 3 runs" in done.text
    for run in runs:
        got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=admin.headers)
        assert got.json()["status"] == "cancelled"
    got = await api.client.get(f"/api/v1/runs/{untouched['id']}", headers=admin.headers)
    assert got.json()["status"] != "cancelled"


async def test_bulk_actions_need_write_rights_and_the_csrf_token(api: Api, admin: Caller) -> None:
    owner = await api.user("vera", Role.USER)
    task = await api.task(owner, "mine")
    run = await api.run(owner, task["id"])
    await api.client.patch(
        f"/api/v1/users/{owner.id}", json={"role": "viewer"}, headers=admin.headers
    )
    async with browser(api) as viewer, browser(api) as root:
        await viewer.sign_in("vera")
        assert (await viewer.page("/ui/runs/bulk?action=cancel")).status_code == 403
        forged = await viewer.act("/ui/runs/bulk", on="/ui/runs", action="cancel")
        assert forged.status_code == 403
        await root.sign_in("root")
        no_token = await root.client.post("/ui/runs/bulk", data={"action": "cancel"})
        assert no_token.status_code == 403
    got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=admin.headers)
    assert got.json()["status"] == run["status"]


async def test_an_error_page_still_carries_a_renewed_session(api: Api, admin: Caller) -> None:
    async with browser(api) as visitor:
        await visitor.sign_in("root")
        stale = _with_expired_access(visitor.client.cookies[SESSION_COOKIE])
        visitor.client.cookies.set(SESSION_COOKIE, stale, path="/ui")
        missing = await visitor.page("/ui/runs/00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404
        renewed = set_cookie(missing.headers.get_list("set-cookie")).split(";")[0]
        assert renewed.split("=", 1)[1].strip('"') != stale


async def test_sign_in_returns_to_the_page_asked_for(api: Api, admin: Caller) -> None:
    async with browser(api) as visitor:
        asked = await visitor.page("/ui/runs?status=queued")
        target = asked.headers["location"].split("next=", 1)[1]
        form = await visitor.client.get(f"/ui/login?next={target}")
        response = await visitor.client.post(
            "/ui/login",
            data={
                "username": "root",
                "password": "correct horse battery staple",
                "csrf_token": csrf_of(form.text),
                "next": "/ui/runs?status=queued",
            },
        )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/runs?status=queued"
    assert 'value="/ui/runs?status=queued"' in form.text


async def test_an_operator_pauses_and_resumes_a_queue_and_a_user_may_not(
    api: Api, admin: Caller, alice: Caller
) -> None:
    task = await api.task(alice, "job", queue="reports")
    run = await api.run(alice, task["id"])
    async with browser(api) as root, browser(api) as user:
        await root.sign_in("root")
        await user.sign_in("alice")
        assert "/ui/queues/reports/pause" not in (await user.page("/ui/queues")).text
        refused = await user.act("/ui/queues/reports/pause", on="/ui/queues")
        assert refused.status_code == 403
        paused = await root.act("/ui/queues/reports/pause", on="/ui/queues")
        assert paused.status_code == 303
        page = (await root.page("/ui/queues")).text
        assert "/ui/queues/reports/resume" in page
        got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers)
        assert got.json()["status"] == "pending"  # taken back from the paused queue
        resumed = await root.act("/ui/queues/reports/resume", on="/ui/queues")
        assert resumed.status_code == 303
        state = await api.client.get("/api/v1/queues/reports", headers=admin.headers)
        assert state.json()["paused"] is False


async def test_the_live_feed_needs_a_session_and_hides_other_peoples_runs(
    api: Api, alice: Caller, bob: Caller
) -> None:
    task = await api.task(alice, "private")
    run = await api.run(alice, task["id"])
    async with browser(api) as visitor:
        signed_out = await visitor.page("/ui/events")
        assert signed_out.status_code == 303
        refresh = await visitor.client.get("/ui/runs", headers={"X-Console-Live": "1"})
        assert refresh.status_code == 401  # the page's script reloads to the sign-in form
        await visitor.sign_in("bob")
        foreign = await visitor.page(f"/ui/events?run_id={run['id']}")
        assert foreign.status_code == 404
        malformed = await visitor.client.get(
            "/ui/events", headers={"Last-Event-ID": "not-a-cursor"}
        )
        assert malformed.status_code == 422


async def test_an_operator_purges_a_queue_after_a_confirmation_stating_the_count(
    api: Api, admin: Caller, alice: Caller
) -> None:
    task = await api.task(alice, "job", queue="reports")
    other = await api.task(alice, "other", queue="elsewhere")
    runs = [await api.run(alice, task["id"]) for _ in range(3)]
    kept = await api.run(alice, other["id"])
    async with browser(api) as root:
        await root.sign_in("root")
        assert "/ui/queues/reports/purge" in (await root.page("/ui/queues")).text
        confirm = await root.page("/ui/queues/reports/purge")
        assert confirm.status_code == 200, confirm.text
        assert "cancel 3 runs?" in confirm.text
        for run in runs:  # the confirmation changes nothing
            got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers)
            assert got.json()["status"] != "cancelled"
        done = await root.act("/ui/queues/reports/purge", on="/ui/queues/reports/purge")
        assert done.status_code == 200, done.text
        assert "cancelled 3 runs" in done.text
    for run in runs:
        got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers)
        assert got.json()["status"] == "cancelled"
    got = await api.client.get(f"/api/v1/runs/{kept['id']}", headers=alice.headers)
    assert got.json()["status"] != "cancelled"


async def test_an_operator_sets_and_clears_queue_limits(api: Api, admin: Caller) -> None:
    async with browser(api) as root:
        await root.sign_in("root")
        await api.task(admin, "job", queue="reports")
        set_ = await root.act(
            "/ui/queues/reports/limits", on="/ui/queues", rate_limit="10/s", max_concurrency="4"
        )
        assert set_.status_code == 303, set_.text
        state = (await api.client.get("/api/v1/queues/reports", headers=admin.headers)).json()
        assert (state["rate_limit"], state["max_concurrency"]) == ("10/s", 4)
        page = (await root.page("/ui/queues")).text
        assert 'value="10/s"' in page
        assert 'value="4"' in page
        for field, value in (("max_concurrency", "many"), ("max_concurrency", "0")):
            bad = await root.act(
                "/ui/queues/reports/limits", on="/ui/queues", rate_limit="", **{field: value}
            )
            assert bad.status_code == 422, bad.text
            assert field in bad.text
        bad_rate = await root.act(
            "/ui/queues/reports/limits", on="/ui/queues", rate_limit="fast", max_concurrency=""
        )
        assert bad_rate.status_code == 422, bad_rate.text
        assert "rate" in bad_rate.text
        cleared = await root.act(
            "/ui/queues/reports/limits", on="/ui/queues", rate_limit="", max_concurrency=""
        )
        assert cleared.status_code == 303, cleared.text
        state = (await api.client.get("/api/v1/queues/reports", headers=admin.headers)).json()
        assert (state["rate_limit"], state["max_concurrency"]) == (None, None)


@pytest.mark.parametrize("role", [Role.VIEWER, Role.USER])
async def test_viewers_and_users_get_no_purge_or_limits_and_forged_posts_are_refused(
    api: Api, admin: Caller, role: Role
) -> None:
    owner = await api.user("vera", role)
    task = await api.task(admin, "job", queue="reports")
    run = await api.run(admin, task["id"])
    async with browser(api) as visitor:
        await visitor.sign_in("vera")
        page = (await visitor.page("/ui/queues")).text
        assert "/purge" not in page
        assert "/ui/queues/reports/limits" not in page  # (the nav links the named limits)
        assert "Save limits" not in page
        assert (await visitor.page("/ui/queues/reports/purge")).status_code == 403
        for path, fields in (
            ("/ui/queues/reports/purge", {}),
            ("/ui/queues/reports/limits", {"rate_limit": "1/h", "max_concurrency": "1"}),
        ):
            forged = await visitor.act(path, on="/ui/queues", **fields)
            assert forged.status_code == 403, (path, forged.text)
    assert owner.id
    got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=admin.headers)
    assert got.json()["status"] != "cancelled"
    state = (await api.client.get("/api/v1/queues/reports", headers=admin.headers)).json()
    assert (state["rate_limit"], state["max_concurrency"]) == (None, None)


async def test_queue_purge_and_limits_need_the_csrf_token(api: Api, admin: Caller) -> None:
    task = await api.task(admin, "job", queue="reports")
    run = await api.run(admin, task["id"])
    async with browser(api) as root:
        await root.sign_in("root")
        for path in ("/ui/queues/reports/purge", "/ui/queues/reports/limits"):
            response = await root.client.post(path, data={"max_concurrency": "1"})
            assert response.status_code == 403, (path, response.text)
    got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=admin.headers)
    assert got.json()["status"] != "cancelled"
    state = (await api.client.get("/api/v1/queues/reports", headers=admin.headers)).json()
    assert state["max_concurrency"] is None


async def _post_selected(visitor: Browser, action: str, ids: list[str]) -> Response:
    token = csrf_of((await visitor.page("/ui/runs")).text)
    return await visitor.client.post(
        "/ui/runs/selected", data={"csrf_token": token, "action": action, "ids": ids}
    )


async def test_hand_picked_runs_are_cancelled_then_retried_with_each_outcome(
    api: Api, admin: Caller
) -> None:
    task = await api.task(admin, "job")
    picked = [await api.run(admin, task["id"]) for _ in range(3)]
    left = await api.run(admin, task["id"])
    early = await api.client.post(
        f"/api/v1/runs/{picked[0]['id']}/cancel", json={}, headers=admin.headers
    )
    assert early.status_code == 200, early.text
    ids = [run["id"] for run in picked]
    async with browser(api) as root:
        await root.sign_in("root")
        listing = (await root.page("/ui/runs")).text
        for run_id in (*ids, left["id"]):
            assert f'name="ids" value="{run_id}" form="runs-selection"' in listing
        assert 'id="runs-selection"' in listing
        cancelled = await _post_selected(root, "cancel", [*ids, ids[1]])  # a repeat is one
        assert cancelled.status_code == 200, cancelled.text
        assert "3 selected runs: 2 done, 1 skipped, 0 failed" in cancelled.text
        assert "the run is already cancelled" in cancelled.text
        assert "<td>done</td>" in cancelled.text
        assert "<td>skipped</td>" in cancelled.text
        for run_id in ids:
            assert f'href="/ui/runs/{run_id}"' in cancelled.text
        retried = await _post_selected(root, "retry", ids[1:])
        assert retried.status_code == 200, retried.text
        assert "2 selected runs: 2 done, 0 skipped, 0 failed" in retried.text
    for run_id in ids:
        got = await api.client.get(f"/api/v1/runs/{run_id}", headers=admin.headers)
        assert got.json()["status"] == "cancelled"
    got = await api.client.get(f"/api/v1/runs/{left['id']}", headers=admin.headers)
    assert got.json()["status"] != "cancelled"
    runs = await api.client.get(f"/api/v1/tasks/{task['id']}/runs", headers=admin.headers)
    assert len(runs.json()["items"]) == 6  # 4 + the 2 retries


async def test_hand_picked_bulk_names_bad_fields(api: Api, admin: Caller) -> None:
    task = await api.task(admin, "job")
    run = await api.run(admin, task["id"])
    async with browser(api) as root:
        await root.sign_in("root")
        for action, ids, field in (("delete", [run["id"]], "action"), ("cancel", [], "ids")):
            response = await _post_selected(root, action, ids)
            assert response.status_code == 422, response.text
            assert field in response.text
    got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=admin.headers)
    assert got.json()["status"] != "cancelled"


async def test_a_viewer_gets_no_selection_and_a_forged_or_tokenless_pick_is_refused(
    api: Api, admin: Caller
) -> None:
    owner = await api.user("vera", Role.USER)
    task = await api.task(owner, "mine")
    run = await api.run(owner, task["id"])
    await api.client.patch(
        f"/api/v1/users/{owner.id}", json={"role": "viewer"}, headers=admin.headers
    )
    async with browser(api) as viewer, browser(api) as root:
        await viewer.sign_in("vera")
        listing = (await viewer.page("/ui/runs")).text
        assert run["id"] in listing
        assert 'type="checkbox"' not in listing
        assert "runs-selection" not in listing
        forged = await _post_selected(viewer, "cancel", [run["id"]])
        assert forged.status_code == 403, forged.text
        await root.sign_in("root")
        no_token = await root.client.post(
            "/ui/runs/selected", data={"action": "cancel", "ids": [run["id"]]}
        )
        assert no_token.status_code == 403
    got = await api.client.get(f"/api/v1/runs/{run['id']}", headers=admin.headers)
    assert got.json()["status"] == run["status"]


async def test_the_overview_shows_the_lateness_of_fired_slots(api: Api, admin: Caller) -> None:
    task = await api.task(admin, "nightly", schedule={"cron": "0 2 * * *"})
    async with browser(api) as root:
        await root.sign_in("root")
        assert "No fired slots among the newest 0 runs." in (await root.page("/ui")).text
        slot = api.resources.clock.now() - timedelta(minutes=5)
        async with api.resources.uow_factory() as uow:
            task_obj = await uow.tasks.get(task["id"])
            assert task_obj is not None
            for late in (2, 4, 30):
                run = TaskRun.create(
                    task_obj,
                    trigger=RunTrigger.SCHEDULE,
                    logical_time=slot - timedelta(minutes=late),
                    now=slot - timedelta(minutes=late) + timedelta(seconds=late),
                )
                await uow.runs.add(run)
            await uow.commit()
        await api.run(admin, task["id"])  # a manual run is no fired slot
        page = (await root.page("/ui")).text
    assert "of the 3 fired slots among the newest 4 runs" in page
    assert '<span class="n">4.0 s</span> p50' in page
    assert '<span class="n">30.0 s</span> p99' in page


async def test_a_runs_output_stream_sends_from_the_offset_then_ends_and_hides_others_runs(
    api: Api, alice: Caller, bob: Caller, sqlite_engine: AsyncEngine
) -> None:
    task = await api.task(alice, "talker")
    run = await api.run(alice, task["id"])
    await api.client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers)
    async with sqlite_engine.begin() as conn:
        await conn.execute(
            update(task_runs).where(task_runs.c.id == run["id"]).values(output="<b>hi</b>\nbye\n")
        )
    stream = f"/ui/runs/{run['id']}/output"
    async with browser(api) as visitor, browser(api) as stranger:
        await visitor.sign_in("alice")
        await stranger.sign_in("bob")
        whole = await visitor.page(stream)
        resumed = await visitor.client.get(stream, headers={"Last-Event-ID": "10"})
        beyond = await visitor.page(f"{stream}?offset=999")
        hidden = await stranger.page(stream)
        page = (await visitor.page(f"/ui/runs/{run['id']}")).text
    assert whole.status_code == 200
    assert whole.headers["content-type"].startswith("text/event-stream")
    assert sse(whole.text) == [
        ("output", "14", {"at": 0, "next": 14, "text": "<b>hi</b>\nbye\n"}),
        ("end", "14", {"status": "cancelled"}),
    ]
    assert sse(resumed.text)[0] == ("output", "14", {"at": 10, "next": 14, "text": "bye\n"})
    assert sse(beyond.text) == [("end", "14", {"status": "cancelled"})]
    assert hidden.status_code == 404
    assert "&lt;b&gt;hi&lt;/b&gt;" in page
    assert "data-stream" not in page  # a final run's page follows nothing


def sse(body: str) -> list[tuple[str, str, Any]]:
    """(event, id, data) of each message of a Server-Sent Events body."""
    messages = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.split("\n") if ": " in line and line[0] != ":"
        )
        if "event" in fields:
            messages.append((fields["event"], fields.get("id", ""), json.loads(fields["data"])))
    return messages


async def test_the_run_page_shows_what_a_run_ran_with(api: Api, admin: Caller) -> None:
    task = await api.task(admin, "echo", executor="noop", params={"sleep_seconds": 0})
    response = await api.client.post(
        f"/api/v1/tasks/{task['id']}/trigger",
        json={"params": {"sleep_seconds": 1, "fail": True}},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    async with browser(api) as visitor:
        await visitor.sign_in("root")
        page = (await visitor.page(f"/ui/runs/{response.json()['id']}")).text
    assert '<code id="run-params">{"fail": true, "sleep_seconds": 1}</code>' in page
    assert 'id="run-executor-params"' in page
