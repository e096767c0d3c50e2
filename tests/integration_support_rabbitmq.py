"""Stopping and starting the local RabbitMQ for tests of a real broker restart: the broker is
always started again, and the caller waits until it answers."""

from __future__ import annotations

import asyncio

import aio_pika

from services import RABBITMQ_URL


async def rabbitmqctl(*arguments: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(arguments)} failed: {output.decode()}")
    return output.decode()


async def wait_until_answering(within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            connection = await aio_pika.connect(RABBITMQ_URL, timeout=3)
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        else:
            await connection.close()
            return
