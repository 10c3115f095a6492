"""The run controls of the pages: cancel, pause, resume and re-run a run, cancel one execution,
approve or reject a pipeline stage waiting for approval.

Each is a plain POST form that works without JavaScript: POST, then 303 to the run page (for a
re-run, the new run's page) with a flash message. With htmx the form asks for confirmation first
and gets HX-Redirect to that page. The state change itself is `runs.transitions`' (lock, ALLOWED
table, event and audit row) or `runs.services.run_rerun`'s; which controls a page shows is
`runs.run_views.run_controls` and, for approvals, the role the stage names.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse
from django.views.decorators.http import require_POST

from runs import selectors, services, transitions
from runs.errors import Conflict, Forbidden
from runs.forms import RERUN_MODES, approval_comment, control_reason, rerun_mode
from runs.models import Role
from runs.views import View, actor_for, page
from runs.views import after_post as _to_page


def control(view: View) -> View:
    """A run control: POST only (GET is a 405), login and domain errors as for pages.

    A member below operator gets 403. Under htmx a 403 body would never be shown, so the
    refusal goes back to the page the form was on as a flash message (still with status 403).
    """

    @require_POST
    @page
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(request, *args, **kwargs)
        except Forbidden as exc:
            current = request.htmx.current_url_abs_path if request.htmx else None
            if not current:
                raise
            messages.error(request, exc.message)
            return _to_page(request, current, status=403)

    return wrapper


def _control_apply(request: HttpRequest, run_id: int, move: Callable[[], str]) -> HttpResponseBase:
    """Apply `move` (which returns the success message) and go back to the run page.

    A refused move (TransitionNotAllowed, a Conflict: the run ended or changed since the page
    was drawn) is the normal outcome of a race with a worker or another person, so it is a
    message on the page, not an error page.
    """
    try:
        messages.success(request, move())
    except Conflict as exc:
        messages.error(request, exc.message)
    return _to_page(request, reverse("run_detail", args=[run_id]))


def _refused(request: HttpRequest, run_id: int, problem: str) -> HttpResponseBase:
    messages.error(request, problem)
    return _to_page(request, reverse("run_detail", args=[run_id]))


@control
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponseBase:
    """Cancel the run, with an optional reason: executions not started end at once, running
    ones are asked to stop."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)
    reason, problem = control_reason(request.POST)
    if problem:
        return _refused(request, run.pk, problem)

    def move() -> str:
        done = transitions.run_cancel(run_id=run.pk, actor=actor_for(request), reason=reason)
        if done.is_terminal:
            return f"Run #{run.pk} cancelled."
        return (f"Cancel requested for run #{run.pk}: its running executions are being "
                "stopped, and the run ends cancelled once they have.")

    return _control_apply(request, run.pk, move)


@control
def run_pause(request: HttpRequest, run_id: int) -> HttpResponseBase:
    """Pause the run: nothing new starts; running executions finish."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)

    def move() -> str:
        transitions.run_pause(run_id=run.pk, actor=actor_for(request))
        return (f"Run #{run.pk} paused: no new executions start until it is resumed; running "
                "ones finish.")

    return _control_apply(request, run.pk, move)


@control
def run_resume(request: HttpRequest, run_id: int) -> HttpResponseBase:
    """Resume a paused run."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)

    def move() -> str:
        transitions.run_resume(run_id=run.pk, actor=actor_for(request))
        return f"Run #{run.pk} resumed."

    return _control_apply(request, run.pk, move)


@control
def execution_cancel(request: HttpRequest, execution_id: int) -> HttpResponseBase:
    """Cancel one execution: at once if it has not started, else a stop request its worker
    picks up within a second or two."""
    execution = selectors.execution_get(request.user, execution_id)  # outsiders: 404
    selectors.require_role(request.user, execution.run.project, Role.OPERATOR)
    run_id = execution.run_id
    reason, problem = control_reason(request.POST)
    if problem:
        return _refused(request, run_id, problem)

    def move() -> str:
        done = transitions.execution_cancel(execution_id=execution.pk,
                                            actor=actor_for(request), reason=reason)
        if done.is_terminal:
            return f"Execution {done.name} of run #{run_id} cancelled."
        return (f"Stop requested for execution {done.name} of run #{run_id}: its worker "
                "terminates it within a few seconds.")

    return _control_apply(request, run_id, move)


@control
def run_rerun(request: HttpRequest, run_id: int) -> HttpResponseBase:
    """Re-run an ended run with the same parameters: mode "all", or "failed" to reuse what
    succeeded and run only what failed or never ran. Lands on the new run's page."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)
    mode, problem = rerun_mode(request.POST)
    if problem:
        return _refused(request, run.pk, problem)
    try:
        new = services.run_rerun(run=run, mode=mode, actor=actor_for(request))
    except Conflict as exc:  # still going, nothing failed, or the task was disabled since
        messages.error(request, exc.message)
        return _to_page(request, reverse("run_detail", args=[run.pk]))
    messages.success(request, f"Run #{new.pk} queued: a re-run ({RERUN_MODES[mode]}) of run "
                     f"#{run.pk}.")
    return _to_page(request, reverse("run_detail", args=[new.pk]))


def _approval(request: HttpRequest, execution_id: int, *, approve: bool) -> HttpResponseBase:
    """Approve or reject a stage waiting for approval. The stage names who may: an operator
    (and above) or only a maintainer; a member below that gets 403, an outsider 404."""
    execution = selectors.execution_get(request.user, execution_id)  # outsiders: 404
    role = (execution.definition or {}).get("role", Role.OPERATOR)
    if role not in Role.values:  # a gate always names one; anything else is not a gate
        role = Role.MAINTAINER
    selectors.require_role(request.user, execution.run.project, role)
    run_id = execution.run_id
    comment, problem = approval_comment(request.POST)
    if problem:
        return _refused(request, run_id, problem)

    def move() -> str:
        done = transitions.execution_approve(execution_id=execution.pk, actor=actor_for(request),
                                             approve=approve, comment=comment)
        if approve:
            return f"Stage {done.stage} of run #{run_id} approved: the run continues."
        return (f"Stage {done.stage} of run #{run_id} rejected: the stage failed, and the "
                "pipeline's on_failure rule decides what happens next.")

    return _control_apply(request, run_id, move)


@control
def execution_approve(request: HttpRequest, execution_id: int) -> HttpResponseBase:
    """Approve a stage waiting for approval, with an optional comment."""
    return _approval(request, execution_id, approve=True)


@control
def execution_reject(request: HttpRequest, execution_id: int) -> HttpResponseBase:
    """Reject a stage waiting for approval, with an optional comment: the stage fails."""
    return _approval(request, execution_id, approve=False)
