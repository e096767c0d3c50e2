"""The ``http`` executor: one request through httpx, judged by its status code.

The task's timeout bounds the whole exchange (connect, send, the capped body). Redirects are
followed only when the task sets ``follow_redirects`` (at most :data:`MAX_REDIRECTS` hops);
otherwise a 3xx fails unless ``expected_status`` lists it. Without a task timeout the client's
own per-operation timeouts apply.

Every connection, redirects included, goes through the transport it is given: the worker's
composition root hands it the outbound policy's guarded transport
(:mod:`scheduler_infrastructure.outbound.guarded`). A destination that is refused by the policy,
does not resolve, refuses the connection, resets it or does not answer in time gives the task
the same :data:`UNREACHABLE` error, so a task cannot map the worker's network or tell an open
port from a closed one; the real reason is logged at debug level on the worker only.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
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

#: What a task learns when its request did not reach a permitted, answering destination.
UNREACHABLE = "destination refused or unreachable"
#: Redirect hops followed when a task asks for them.
MAX_REDIRECTS = 5

logger = logging.getLogger(__name__)


class HttpExecutor:
    """Holds one client (and its connection pool) for every run; :meth:`aclose` closes it.

    ``transport`` makes the connections: the outbound policy's guarded transport, which
    decides which destinations are permitted. httpx's own ``trust_env`` stays off: no proxy or
    ``.netrc`` of the worker's applies to a task's request.
    """

    name = "http"

    def __init__(
        self, *, transport: httpx.AsyncBaseTransport, output_limit: int = DEFAULT_OUTPUT_LIMIT
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=transport, trust_env=False, max_redirects=MAX_REDIRECTS
        )
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
        await self._client.aclose()

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        params = context.params
        try:
            validate_executor(self.name, params)
        except ValidationError as exc:
            return invalid_params(exc)
        request: dict[str, Any] = {
            "headers": params.get("headers"),
            "follow_redirects": params.get("follow_redirects", False),
        }
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
        except (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.NetworkError) as exc:
            return _unreachable(context.run_id, exc)
        except (TimeoutError, httpx.TimeoutException):
            return timed_out(timeout, output=output.text(complete=False))
        except httpx.TooManyRedirects:
            return failed(f"more than {MAX_REDIRECTS} redirects")
        except httpx.RemoteProtocolError as exc:
            return _unreachable(context.run_id, exc)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return failed(describe_exception(exc))
        status = response.status_code
        text = output.text(complete=complete)
        if _expected(status, params.get("expected_status")):
            return succeeded({"status_code": status}, output=text)
        return failed(f"unexpected status {status}", output=text, result={"status_code": status})


def _unreachable(run_id: str, exc: httpx.HTTPError) -> ExecutionResult:
    """The uniform failure, unless the connection was made and TLS is what failed (the
    destination is permitted and answering then: the task's owner needs to know)."""
    if _tls_failure(exc):
        return failed(f"TLS handshake with the destination failed: {exc}")
    logger.debug("http run %s: %s", run_id, _reason(exc))
    return failed(UNREACHABLE)


def _causes(exc: BaseException, limit: int = 8) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (at most ``limit``)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < limit:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _tls_failure(exc: BaseException) -> bool:
    return any(isinstance(cause, ssl.SSLError) for cause in _causes(exc))


def _reason(exc: BaseException) -> str:
    """The chain of causes, innermost last: the log says what the task is not told."""
    return " <- ".join(describe_exception(cause) for cause in _causes(exc))


def _expected(status: int, expected: int | list[int] | None) -> bool:
    if expected is None:
        return 200 <= status < 300
    if isinstance(expected, int):
        return status == expected
    return status in expected
