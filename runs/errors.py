"""Domain errors. Services raise these; the API maps them to HTTP in one place
(`config.api`) and pages turn them into messages or form errors."""

from __future__ import annotations


class ApplicationError(Exception):
    """An error a client can cause and fix. `message` says what to do next."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"


class Forbidden(ApplicationError):
    """The caller may see the object but not do this to it (a viewer cancelling, say)."""

    status_code = 403
    code = "forbidden"


class InvalidInput(ApplicationError):
    status_code = 422
    code = "invalid"


class Conflict(ApplicationError):
    status_code = 409
    code = "conflict"


class TransitionNotAllowed(Conflict):
    """A status change not in the ALLOWED table of `runs.transitions`."""

    code = "transition_not_allowed"
