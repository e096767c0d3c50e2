"""The ``http`` executor: one request through httpx, judged by its status code.

The task's timeout bounds the whole exchange (connect, send, the capped body). Redirects are
not followed (httpx's default): a 3xx fails unless ``expected_status`` lists it. Without a task
timeout the client's own per-operation timeouts apply.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import httpx

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import validate_executor
from scheduler_worker.executors.output import DEFAULT_OUTPUT_LIMIT, CappedOutput
from scheduler_worker.executors.results import (
    describe_exception,
    failed,
    invalid_params,
    succeeded,
    timed_out,
)


class HttpExecutor:
    """Closes its client on :meth:`aclose` only when it created it; a given client is the
    caller's to close."""

    name = "http"

    def __init__(
        self, *, client: httpx.AsyncClient | None = None, output_limit: int = DEFAULT_OUTPUT_LIMIT
    ) -> None:
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._output_limit = output_limit

    async def __aenter__(self) -> HttpExecutor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        params = context.params
        try:
            validate_executor(self.name, params)
        except ValidationError as exc:
            return invalid_params(exc)
        request: dict[str, Any] = {"headers": params.get("headers")}
        if params.get("body") is not None:
            request["content"] = params["body"].encode()
        elif "json" in params:
            request["json"] = params["json"]
        timeout = context.timeout_seconds
        if timeout is not None:
            request["timeout"] = timeout
        output = CappedOutput(self._output_limit)
        complete = True
        try:
            async with (
                asyncio.timeout(timeout),
                self._client.stream(
                    params.get("method", "GET").upper(), params["url"], **request
                ) as response,
            ):
                async for chunk in response.aiter_bytes():
                    output.write(chunk)
                    if output.truncated:  # the rest of the body is not worth downloading
                        complete = False
                        break
        except (TimeoutError, httpx.TimeoutException):
            return timed_out(timeout, output=output.text(complete=False))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return failed(describe_exception(exc))
        status = response.status_code
        text = output.text(complete=complete)
        if _expected(status, params.get("expected_status")):
            return succeeded({"status_code": status}, output=text)
        return failed(f"unexpected status {status}", output=text, result={"status_code": status})


def _expected(status: int, expected: int | list[int] | None) -> bool:
    if expected is None:
        return 200 <= status < 300
    if isinstance(expected, int):
        return status == expected
    return status in expected
