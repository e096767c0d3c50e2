"""The console's webhooks page over ASGI: the secret shown once, the test event signed and in
the delivery log, disable / enable again / delete through the use cases, keyset pages, owner
scoping (404), and viewers without buttons whose forged or tokenless posts are refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from api_harness import Api, api_settings, running_api, wipe
from console_client import INLINE_SCRIPT, INLINE_STYLE, browser, csrf_of
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role
from scheduler_infrastructure.config.settings import EventsSettings, WebhookSettings
from scheduler_infrastructure.persistence.tables import webhooks
from webhook_receiver import receiving, verify

pytestmark = pytest.mark.timeout(60)
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


@pytest.fixture
async def hooks_api(sqlite_engine: AsyncEngine) -> AsyncIterator[Api]:
    """Loopback allowed for webhooks only, by the explicit ``events.webhooks.allow``."""
    settings = replace(
        api_settings(), events=EventsSettings(webhooks=WebhookSettings(allow=("127.0.0.1",)))
    )
    async with running_api(sqlite_engine, settings=settings) as api:
        yield api
    await wipe(sqlite_engine)


async def test_a_webhook_is_created_tested_disabled_enabled_and_deleted_from_the_console(
    hooks_api: Api,
) -> None:
    api = hooks_api
    alice = await api.user("alice")
    async with receiving() as receiver, browser(api) as visitor:
        await visitor.sign_in("alice")
        empty = await visitor.page("/ui/webhooks")
        assert empty.status_code == 200
        assert "No webhooks yet." in empty.text
        assert '<a href="/ui/webhooks" aria-current="page">Webhooks</a>' in empty.text

        created = await visitor.act(
            "/ui/webhooks",
            on="/ui/webhooks",
            url=receiver.url,
            event_types="run.failed, task.*",
            statuses="failed dead_lettered",
            description="<b>pager</b>",
        )
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        shown = SECRET.findall(created.text)
        assert len(shown) == 1
        assert "&lt;b&gt;pager&lt;/b&gt;" in created.text
        assert not INLINE_SCRIPT.search(created.text)
        assert not INLINE_STYLE.search(created.text)
        (hook,) = (await api.client.get("/api/v1/webhooks", headers=alice.headers)).json()["items"]
        assert hook["event_types"] == ["run.failed", "task.*"]
        assert hook["statuses"] == ["failed", "dead_lettered"]
        listing = (await visitor.page("/ui/webhooks")).text
        assert shown[0] not in listing  # once only
        page = f"/ui/webhooks/{hook['id']}"

        tested = await visitor.act(f"{page}/test", on=page)
        assert tested.status_code == 303
        assert tested.headers["location"] == page
        (request,) = receiver.requests
        assert verify(shown[0], request)
        detail = (await visitor.page(page)).text
        assert re.search(
            r"<td><code>webhook\.test</code></td><td><span [^>]+>delivered</span></td>"
            r"<td>200</td><td>\d+ ms</td><td>1</td>",
            detail,
        ), detail
        assert "webhook.test" in (await visitor.page("/ui/webhooks")).text  # latest deliveries

        assert (await visitor.act(f"{page}/disable", on=page)).status_code == 303
        disabled = (await visitor.page(page)).text
        assert ">disabled</span> — by its owner" in disabled
        assert "Enable again" in disabled
        assert (await visitor.act(f"{page}/enable", on=page)).status_code == 303
        again = await api.client.get(f"/api/v1/webhooks/{hook['id']}", headers=alice.headers)
        assert again.json()["enabled"] is True

        assert (await visitor.act(f"{page}/delete", on=page)).status_code == 303
        gone = await api.client.get(f"/api/v1/webhooks/{hook['id']}", headers=alice.headers)
        assert gone.status_code == 404


async def test_why_a_webhook_was_disabled_is_shown_and_enabling_clears_the_streak(
    hooks_api: Api, sqlite_engine: AsyncEngine
) -> None:
    api = hooks_api
    alice = await api.user("alice")
    made = await api.client.post(
        "/api/v1/webhooks", json={"url": "https://hooks.example.com/x"}, headers=alice.headers
    )
    hook = made.json()["webhook"]
    async with sqlite_engine.begin() as conn:
        await conn.execute(
            update(webhooks)
            .where(webhooks.c.id == hook["id"])
            .values(enabled=False, consecutive_failures=9, disabled_reason="failing for 3 days")
        )
    async with browser(api) as visitor:
        await visitor.sign_in("alice")
        listing = (await visitor.page("/ui/webhooks")).text
        assert ">disabled</span> — failing for 3 days" in listing
        page = f"/ui/webhooks/{hook['id']}"
        assert (await visitor.act(f"{page}/enable", on=page)).status_code == 303
        state = (await visitor.page(page)).text
    assert ">enabled</span>" in state
    assert "failing for 3 days" not in state


async def test_webhooks_are_listed_in_keyset_pages_and_others_are_not_found(
    hooks_api: Api,
) -> None:
    api = hooks_api
    alice = await api.user("alice")
    bob = await api.user("bob")
    for i in range(23):
        made = await api.client.post(
            "/api/v1/webhooks",
            json={"url": f"https://hooks.example.com/{i}"},
            headers=alice.headers,
        )
        assert made.status_code == 201, made.text
    bobs = await api.client.post(
        "/api/v1/webhooks", json={"url": "https://bob.example.com/"}, headers=bob.headers
    )
    bob_page = f"/ui/webhooks/{bobs.json()['webhook']['id']}"
    async with browser(api) as visitor:
        await visitor.sign_in("alice")
        first = (await visitor.page("/ui/webhooks")).text
        after = re.search(r'href="\?after=([^"]+)"', first)
        assert after is not None
        second = (await visitor.page(f"/ui/webhooks?after={after.group(1)}")).text
        assert "bob.example.com" not in first + second
        seen = re.findall(r"https://hooks\.example\.com/(\d+)</a></h2>", first + second)
        assert seen == [str(i) for i in range(23)]
        assert first.count("data-webhook-id=") == 20
        assert "?after=" not in second
        assert (await visitor.page(bob_page)).status_code == 404
        forged = await visitor.act(f"{bob_page}/delete", on="/ui/webhooks")
        assert forged.status_code == 404
        bad = await visitor.page("/ui/webhooks?after=nonsense")
        assert bad.status_code == 404  # not an id: names nothing (as everywhere in the API)
        assert "webhook &#39;nonsense&#39; not found" in bad.text
    still = await api.client.get(
        f"/api/v1/webhooks/{bobs.json()['webhook']['id']}", headers=bob.headers
    )
    assert still.status_code == 200


async def test_a_viewer_sees_webhooks_without_buttons_and_forged_posts_are_refused(
    hooks_api: Api,
) -> None:
    api = hooks_api
    admin = await api.user("root", Role.ADMIN)
    vera = await api.user("vera")
    made = await api.client.post(
        "/api/v1/webhooks", json={"url": "https://hooks.example.com/v"}, headers=vera.headers
    )
    hook = made.json()["webhook"]
    await api.client.patch(
        f"/api/v1/users/{vera.user.id}", json={"role": "viewer"}, headers=admin.headers
    )
    page = f"/ui/webhooks/{hook['id']}"
    async with browser(api) as visitor:
        await visitor.sign_in("vera")
        listing = (await visitor.page("/ui/webhooks")).text
        detail = (await visitor.page(page)).text
        for html in (listing, detail):
            assert "hooks.example.com/v" in html
            assert html.count("<button") == 1  # "Sign out" only
        token = csrf_of(listing)
        for path, fields in (
            ("/ui/webhooks", {"url": "https://hooks.example.com/new"}),
            (f"{page}/test", {}),
            (f"{page}/disable", {}),
            (f"{page}/delete", {}),
        ):
            forged = await visitor.client.post(path, data={"csrf_token": token, **fields})
            assert forged.status_code == 403, (path, forged.text[:300])
    async with browser(api) as root:
        await root.sign_in("root")
        for path in ("/ui/webhooks", f"{page}/test", f"{page}/delete"):
            tokenless = await root.client.post(path, data={"url": "https://hooks.example.com/t"})
            assert tokenless.status_code == 403, path
        everyone = (await root.page("/ui/webhooks")).text
        assert "hooks.example.com/v" in everyone  # an admin sees every user's
    listed = await api.client.get("/api/v1/webhooks", headers=admin.headers)
    assert [w["url"] for w in listed.json()["items"]] == ["https://hooks.example.com/v"]
    assert listed.json()["items"][0]["enabled"] is True


async def test_bad_fields_are_named(hooks_api: Api) -> None:
    await hooks_api.user("alice")
    async with browser(hooks_api) as visitor:
        await visitor.sign_in("alice")
        for fields, status, named in (
            ({"url": "ftp://x"}, 422, "<strong>url</strong>"),
            ({"url": ""}, 422, "url is required"),
            ({"url": "https://x.example.com", "event_types": "Run.Failed!"}, 422, "event_types"),
            ({"url": "https://x.example.com", "statuses": "exploded"}, 422, "statuses must be"),
            ({"url": "https://x.example.com", "task_id": "not-an-id"}, 404, "task_id"),
            ({"url": "http://127.0.0.2/"}, 422, "outbound policy"),
        ):
            answer = await visitor.act("/ui/webhooks", on="/ui/webhooks", **fields)
            assert answer.status_code == status, (fields, answer.status_code, answer.text[:300])
            assert named in answer.text, (fields, answer.text[:800])
        listed = (await visitor.page("/ui/webhooks")).text
    assert "No webhooks yet." in listed
