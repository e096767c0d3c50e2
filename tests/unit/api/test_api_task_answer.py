"""A cached task's answer to ``GET /tasks/{id}`` (``_Shown``): its ASGI response is built once
and sent as it is, and it must be, byte for byte, what Litestar builds from the same
``Response`` — status, every header in order, body. When the route's layers bring anything
(a header, a cookie, a background task, another status), Litestar's own path builds the
answer, with them."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Response
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import Cookie
from litestar.response.base import ASGIResponse

from scheduler_api.controllers.tasks import _Shown

BODY = msgspec.json.encode({"id": "t1", "name": "nightly", "version": 3})
ETAG = '"3"'


def _built(response: Response[Any], **layers: Any) -> ASGIResponse:
    """What the route's response handler asks for (no app, the route's defaults)."""
    arguments: dict[str, Any] = {
        "background": None,
        "cookies": [],
        "headers": {},
        "media_type": MediaType.JSON,
        "status_code": 200,
        "type_encoders": None,
    }
    arguments.update(layers)
    return response.to_asgi_response(None, None, **arguments)  # type: ignore[arg-type]


async def _sent(response: ASGIResponse) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        messages.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    await response({"type": "http"}, receive, send)  # type: ignore[arg-type]
    return messages


async def test_the_kept_answer_is_what_litestar_builds_from_the_same_response() -> None:
    kept = _Shown(BODY, ETAG)
    litestar = Response(BODY, headers={"ETag": ETAG}, media_type=MediaType.JSON)
    expected = await _sent(_built(litestar))
    assert await _sent(_built(kept)) == expected
    assert expected[0]["headers"] == [
        (b"etag", b'"3"'),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    assert expected[1]["body"] == BODY


async def test_it_is_built_once_and_sent_again_unchanged() -> None:
    kept = _Shown(BODY, ETAG)
    first = _built(kept)
    assert _built(kept) is first
    assert await _sent(first) == await _sent(first)


async def test_what_a_layer_brings_is_answered_by_litestars_own_path() -> None:
    kept = _Shown(BODY, ETAG)
    once = _built(kept)

    async def noop() -> None:
        return None

    cases: list[dict[str, Any]] = [
        {"headers": {"X-Layer": "1"}},
        {"cookies": [Cookie(key="c", value="v")]},
        {"background": BackgroundTask(noop)},
        {"status_code": 203},
    ]
    for layers in cases:
        built = _built(kept, **layers)
        assert built is not once, layers
        litestar = Response(BODY, headers={"ETag": ETAG}, media_type=MediaType.JSON)
        assert await _sent(built) == await _sent(_built(litestar, **layers)), layers
    # ... and the kept one is as it was.
    assert await _sent(_built(kept)) == await _sent(once)
    assert _built(kept) is once
