"""Bench: the memory of a console tab that follows the runs list live.

``scheduler run`` (SQLite) with ``--tasks`` no-op tasks firing every second; Debian's Chromium
(``/usr/bin/chromium``, headless, ``--expose-gc``) keeps ``/ui/runs`` open, refreshing itself,
for ``--seconds``; every 30 s the JS heap after a garbage collection and the number of DOM
nodes are printed. Run from the repository root:
``uv run --frozen --no-sync python scripts/bench_console_live.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path[:0] = ["tests/e2e", "tests"]

from browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 (the test helpers, via sys.path)
from embedded import ADMIN_PASSWORD, embedded  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402


async def main(tasks: int, seconds: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        async with embedded(Path(workdir)) as server:
            admin = await server.login("admin", ADMIN_PASSWORD)
            for i in range(tasks):
                body = {"name": f"t{i}", "executor": "noop", "schedule": {"interval_seconds": 1}}
                created = await server.client.post("/api/v1/tasks", headers=admin, json=body)
                assert created.status_code == 201, created.text
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    headless=True,
                    args=[*CHROMIUM_ARGS, "--js-flags=--expose-gc"],
                )
                page = await browser.new_page()
                await page.goto(server.url + "/ui/login")
                await page.get_by_label("Username").fill("admin")
                await page.get_by_label("Password").fill(ADMIN_PASSWORD)
                await page.get_by_role("button", name="Sign in").click()
                await page.goto(server.url + "/ui/runs")
                for elapsed in range(0, seconds + 1, 30):
                    await page.evaluate("gc()")
                    heap = await page.evaluate("performance.memory.usedJSHeapSize")
                    nodes = await page.evaluate("document.getElementsByTagName('*').length")
                    print(f"t={elapsed:4d} s  heap {heap / 1024:7.0f} KiB  DOM nodes {nodes}")
                    if elapsed < seconds:
                        await asyncio.sleep(30)
                await browser.close()
            await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=180)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.tasks, arguments.seconds))
