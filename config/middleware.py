"""The project's own middleware: request hygiene, and static files under either server.

Request hygiene: refuse, with a 400 that says why, input no database or program can hold. A NUL
character or a lone UTF-16 surrogate in the path, query string or a header cannot be stored in
PostgreSQL text and would otherwise surface as a 500 deep in a query. Checking once at the door
keeps every view and endpoint free of that concern.

Static files: ServeStatic, which is async-only, so that under ASGI (uvicorn) the whole chain is
async and no request hops to a thread and back in it; under WSGI (a WSGI server, the test client)
only requests for static files pay for the trip through an event loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import unquote

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from servestatic.middleware import ServeStaticMiddleware
from servestatic.utils import ensure_leading_trailing_slash


def _bad(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class RejectUnstorableInputMiddleware:
    # Both sync and async, so that under ASGI it adds no thread hop to streaming requests.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        refusal = self._refusal(request)
        return refusal if refusal is not None else self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        refusal = self._refusal(request)
        return refusal if refusal is not None else await self.get_response(request)

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        where = self._find(request)
        if where:
            message = (f"The request's {where} contains a NUL character or invalid Unicode; "
                       "remove it and try again.")
            if request.path.startswith("/api/"):
                body = {"error": {"code": "bad_request", "message": message, "fields": {}}}
                return HttpResponse(json.dumps(body), status=400,
                                    content_type="application/json")
            return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
        return None

    @staticmethod
    def _find(request: HttpRequest) -> str:
        if _bad(request.path) or _bad(unquote(request.META.get("PATH_INFO", ""))):
            return "path"
        query = request.META.get("QUERY_STRING", "")
        if "%00" in query or _bad(unquote(query, errors="surrogateescape")):
            return "query string"
        for key, value in request.META.items():
            if key.startswith("HTTP_") and isinstance(value, str) and _bad(value):
                return f"header {key[5:].replace('_', '-').title()}"
        return ""


class StaticFilesMiddleware:
    """ServeStatic (settings SERVESTATIC_*), usable in both modes.

    Under ASGI it is ServeStatic itself. Django would run an async-only middleware under WSGI
    too, but through `async_to_sync`, a new event loop in a new thread, for every request; here
    only requests under the static prefix take that path, and all others go straight on."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.serve_static_sync: Callable | None = None
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)
            self.serve_static = ServeStaticMiddleware(get_response)
        else:
            self.static_prefix = ensure_leading_trailing_slash(
                ServeStaticMiddleware.default_static_prefix(settings))

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.serve_static(request)  # a coroutine: Django awaits it
        if not request.path_info.startswith(self.static_prefix):
            return self.get_response(request)
        if self.serve_static_sync is None:
            # Built on first use: ServeStatic indexes every static file when created (tens of
            # milliseconds), and the test client, which builds a chain per Client, rarely asks
            # for one. Two threads racing here build two equal instances; either will do.
            self.serve_static_sync = async_to_sync(
                ServeStaticMiddleware(sync_to_async(self.get_response)))
        return self.serve_static_sync(request)
