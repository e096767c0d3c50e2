"""Stopping and starting the local Redis for tests of a real Redis restart: the server is
always started again (with the settings the machine's Redis runs with: loopback, port 6379,
nothing kept on disk), and the caller waits until it answers."""

from __future__ import annotations

import asyncio
import subprocess

import redis.asyncio as aioredis

from services import REDIS_URL

REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


def _redis_cli(*args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", "6379", *args], capture_output=True, text=True, timeout=10
    )
    return done.stdout.strip()


async def answers() -> bool:
    return await asyncio.to_thread(_redis_cli, "ping") == "PONG"


async def stop_redis(within: float = 10.0) -> None:
    """``SHUTDOWN NOSAVE``, then wait until the port no longer answers."""
    await asyncio.to_thread(_redis_cli, "shutdown", "nosave")
    async with asyncio.timeout(within):
        while await answers():
            await asyncio.sleep(0.1)


async def start_redis() -> None:
    """Start the server again (a no-op error if it already runs) and wait until it answers."""
    if not await answers():
        await asyncio.to_thread(subprocess.run, REDIS_START, check=True, timeout=30)
    await wait_until_answering()


async def wait_until_answering(within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            if await client.ping():
                return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await client.aclose()
