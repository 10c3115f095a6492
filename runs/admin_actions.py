"""How the back office changes things: every admin action and save calls the same service or
transition as the pages and the API, as the staff user (Actor via="admin"), one object at a
time, and reports each refusal by name instead of failing the whole request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from runs.errors import ApplicationError
from runs.transitions import Actor

# One warning per refused object up to this many; the rest are counted in one more line, so
# selecting a thousand ended runs does not bury the page in messages.
MAX_REFUSALS_LISTED = 20
MAX_IDS_LISTED = 30


def admin_actor(request: HttpRequest) -> Actor:
    """The Actor for audit rows of admin actions: the staff user, via admin."""
    return Actor(
        user=request.user,
        via="admin",
        label=request.user.get_username(),
        # Some servers leave REMOTE_ADDR empty, which an inet column rejects: store no address.
        ip_address=request.META.get("REMOTE_ADDR") or None,
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )


def _count(labels: list[str], noun: str) -> str:
    return f"{len(labels)} {noun}{'' if len(labels) == 1 else 's'}"


def _ids_text(labels: list[str]) -> str:
    shown = ", ".join(labels[:MAX_IDS_LISTED])
    more = len(labels) - MAX_IDS_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def apply_to_each(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    targets: Iterable[tuple[int, str]],
    move: Callable[[int, Actor], str],
    *,
    verb: str,
    noun: str,
    refused_text: str,
) -> None:
    """Apply `move(pk, actor)` to each (pk, label) target in its own transaction, and report.

    `move` returns "done" or another outcome word ("stopping": asked to stop, not ended yet).
    A refusal (the object ended or changed since the list was drawn) is a warning naming the
    object and the reason, never an error page; the other objects are still moved.
    """
    actor = admin_actor(request)
    outcomes: dict[str, list[str]] = {}
    refusals: list[str] = []
    for pk, label in targets:
        try:
            outcomes.setdefault(move(pk, actor), []).append(label)
        except ApplicationError as exc:  # TransitionNotAllowed, or NotFound if deleted since
            refusals.append(f"{label} {refused_text}: {exc.message}")
    if outcomes.get("done"):
        labels = outcomes["done"]
        model_admin.message_user(
            request, f"{verb} {_count(labels, noun)}: {_ids_text(labels)}.", messages.SUCCESS)
    if outcomes.get("stopping"):
        labels = outcomes["stopping"]
        model_admin.message_user(
            request,
            f"Stop requested for {_count(labels, noun)} still running: {_ids_text(labels)}. "
            f"{'They end' if len(labels) > 1 else 'It ends'} cancelled once the processes "
            "have stopped.",
            messages.SUCCESS,
        )
    for text in refusals[:MAX_REFUSALS_LISTED]:
        model_admin.message_user(request, text, messages.WARNING)
    if len(refusals) > MAX_REFUSALS_LISTED:
        model_admin.message_user(
            request, f"{len(refusals) - MAX_REFUSALS_LISTED} more were refused for the same "
            "kinds of reasons; filter the list by status to see them.", messages.WARNING)


class ServiceRefusalsAdmin(admin.ModelAdmin):
    """For admins whose save or delete calls a service: a refusal the form could not foresee
    (the last maintainer removed, a task that gained runs) is an error message on the page the
    staff member came from, not a server error. The admin's own transaction is rolled back."""

    def changeform_view(self, request: HttpRequest, object_id: str | None = None,
                        form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ApplicationError as exc:
            self.message_user(request, f"Nothing was saved. {exc.message}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request: HttpRequest, object_id: str,
                    extra_context: dict | None = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ApplicationError as exc:
            self.message_user(request, f"Nothing was deleted. {exc.message}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path().rsplit("delete/", 1)[0]
                                        + "change/")
