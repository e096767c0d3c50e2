"""A browser-like client of the console over ASGI: its own cookie jar, and the CSRF token of
the page it last read."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from api_harness import PASSWORD, Api
from litestar import Litestar

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=", re.IGNORECASE)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, html[:2000]
    return found.group(1)


@dataclass
class Browser:
    client: httpx.AsyncClient

    async def sign_in(self, username: str, password: str = PASSWORD) -> httpx.Response:
        form = await self.client.get("/ui/login")
        assert form.status_code == 200, form.text
        return await self.client.post(
            "/ui/login",
            data={"username": username, "password": password, "csrf_token": csrf_of(form.text)},
        )

    async def page(self, path: str) -> httpx.Response:
        return await self.client.get(path)

    async def act(self, path: str, *, on: str, **fields: str) -> httpx.Response:
        """Post a form the way the page ``on`` would (with its CSRF token)."""
        page = await self.client.get(on)
        assert page.status_code == 200, page.text
        return await self.client.post(path, data={"csrf_token": csrf_of(page.text), **fields})


@asynccontextmanager
async def browser(
    api: Api | Litestar, base_url: str = "http://testserver"
) -> AsyncIterator[Browser]:
    app = api.app if isinstance(api, Api) else api
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url
    ) as client:
        yield Browser(client)
