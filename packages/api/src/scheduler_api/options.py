"""``OPTIONS`` answers that list every method of the resource.

Litestar's automatic ``OPTIONS`` handler remembers the methods its route had when it was made,
so a resource whose methods come from several handlers (``GET`` and ``POST /tasks``) answered
``Allow: OPTIONS, POST``. This answers from the routes as the app finally holds them.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT


def options_response(request: Request[Any, Any, Any]) -> Response[None]:
    template = request.scope.get("path_template")
    methods = {"OPTIONS"}
    for route in request.app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            methods.update(route.methods)
    return Response(
        content=None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": ", ".join(sorted(methods))}
    )
