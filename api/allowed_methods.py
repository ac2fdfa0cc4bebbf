"""``Allow``: the methods a path supports, for ``OPTIONS`` answers and 405 problems (RFC 9110).

Starlette's 405 names only the methods of the first route whose path matched, and FastAPI
has no ``OPTIONS`` handler. Here every route whose path matches counts: ``OPTIONS`` on a
known path answers 204 with all of them (and ``OPTIONS``), a 405 lists the same.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

#: The methods asked about: a route may serve any of them.
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _route_methods(routes: list[BaseRoute], scope: Scope) -> set[str]:
    """The methods some route fully matches for the path of ``scope`` (routers included by
    ``include_router`` are asked as a whole, as the app's router asks them)."""
    return {
        method
        for method in HTTP_METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    }


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """Sorted methods the path of ``scope`` supports, OPTIONS included; [] for an unknown path."""
    methods = _route_methods(routes, scope)
    return sorted(methods | {"OPTIONS"}) if methods else []


def allow_header(routes: list[BaseRoute], scope: Scope) -> str:
    return ", ".join(allowed_methods(routes, scope))


class OptionsMiddleware:
    """ASGI middleware: ``OPTIONS`` on a path some route serves -> 204 with ``Allow``
    (unless a route serves ``OPTIONS`` itself)."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            methods = _route_methods(self.routes, scope)
            if methods and "OPTIONS" not in methods:  # a route that serves OPTIONS itself answers it
                allow = ", ".join(sorted(methods | {"OPTIONS"}))
                await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
                return
        await self.app(scope, receive, send)
