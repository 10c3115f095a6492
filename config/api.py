"""The one NinjaAPI: authentication, the error shape, and the routers of each app.

Every error a client can cause comes back as

    {"error": {"code": "...", "message": "what to do next", "fields": {"name": ["..."]}}}

with 400 (bad request), 401 (no or bad credentials), 403 (role too low), 404 (not found or not
visible), 409 (conflict), 422 (invalid input).
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyCookie, HttpBearer

from runs.errors import ApplicationError
from runs.services import api_token_authenticate


class BearerToken(HttpBearer):
    """`Authorization: Bearer sy_...` API tokens (stored hashed)."""

    def authenticate(self, request: HttpRequest, token: str):
        user = api_token_authenticate(token)
        if user is not None:
            request.user = user
            request.auth_via = "token"
        return user


class Session(APIKeyCookie):
    """The browser's session cookie, with CSRF checked on unsafe methods."""

    param_name = "sessionid"

    def authenticate(self, request: HttpRequest, key: str | None):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            request.auth_via = "session"
            return user
        return None


api = NinjaAPI(
    title="Switchyard API",
    version="1.0",
    description=(
        "Launch, watch and control runs. Authenticate with `Authorization: Bearer <token>` "
        "(create one with `manage.py create_api_token` or on your account page)."
    ),
    auth=[BearerToken(), Session(csrf=True)],
    urls_namespace="api",
)


def error_response(request: HttpRequest, status: int, code: str, message: str,
                   fields: dict | None = None) -> HttpResponse:
    body = {"error": {"code": code, "message": message, "fields": fields or {}}}
    return api.create_response(request, body, status=status)


@api.exception_handler(ApplicationError)
def _application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    return error_response(request, exc.status_code, exc.code, exc.message, exc.fields)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        key = ".".join(loc) or "body"
        fields.setdefault(key, []).append(error.get("msg", "invalid"))
    return error_response(request, 422, "invalid", "The request is invalid; see the errors per "
                          "field.", fields)


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(
        request, 401, "unauthenticated",
        "Authentication required: send 'Authorization: Bearer <token>' with a valid, "
        "unrevoked API token, or log in.",
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", "Not found.")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict"}.get(exc.status_code, "error")
    return error_response(request, exc.status_code, code, str(exc))


api.add_router("/", "runs.api.router")
api.add_router("/", "runs.streams.router")
api.add_router("/", "runs.api_projects.router")
api.add_router("/", "runs.api_projects.tokens")
api.add_router("/", "hooks.api.router")
api.add_router("/", "artifacts.api.router")
api.add_router("/", "runs.api_schedules.router")
