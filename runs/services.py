"""Writes that are not status changes: launching and re-running runs, API tokens, passwords.

Functions are keyword-only and named <entity>_<action>. Status changes are delegated to
`runs.transitions`; nothing here assigns a status.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from runs.errors import Conflict, InvalidInput
from runs.models import ApiToken, Execution, Run, Task, Trigger
from runs.notify import run_status_announce
from runs.params import params_redacted, params_validate, secret_names
from runs.secret_box import secrets_encrypt
from runs.transitions import Actor, audit_write, event_append

TOKEN_PREFIX = "sy_"  # noqa: S105  a public marker, not a secret


def _fingerprint(task: Task, raw_params: Any) -> str:
    # Keyed (HMAC), because the request may hold secret values: a stored plain hash of a weak
    # secret could be guessed offline.
    import hmac

    from django.conf import settings

    body = json.dumps({"task": task.pk, "params": raw_params}, sort_keys=True, default=str)
    key = hashlib.sha256(b"switchyard.idempotency:" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def run_launch(
    *,
    task: Task,
    raw_params: Any,
    actor: Actor,
    trigger: str = Trigger.UI,
    from_form: bool = False,
    idempotency_key: str = "",
    now: datetime | None = None,
) -> tuple[Run, bool]:
    """Validate parameters and create a queued run with its execution.

    Returns (run, created). With an idempotency key that was used before for the same task and
    parameters, returns the earlier run and created=False; for another request, Conflict.
    """
    now = now or timezone.now()
    if len(idempotency_key) > 200:
        raise InvalidInput("The Idempotency-Key header must be at most 200 characters.")
    fingerprint = _fingerprint(task, raw_params) if idempotency_key else ""
    if idempotency_key:
        existing = _idempotent_match(task, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    if not task.enabled:
        raise Conflict(f"Task {task.slug!r} is disabled; ask a maintainer to enable it.")
    schema = task.params_schema
    clean, errors = params_validate(schema, raw_params, from_form=from_form)
    if not errors and task.kind == "command":
        from runs.params import leading_dash_errors

        errors = leading_dash_errors(task.spec.get("argv") or [], schema, clean)
    if errors:
        raise InvalidInput("Some parameters are invalid; see the errors per field.",
                           fields=errors)
    hidden = secret_names(schema)
    user = actor.user if getattr(actor.user, "pk", None) else None
    try:
        with transaction.atomic():
            run = Run.objects.create(
                project_id=task.project_id,
                task=task,
                task_snapshot=task.snapshot(),
                params=params_redacted(schema, clean),
                secret_params=secrets_encrypt({k: v for k, v in clean.items() if k in hidden}),
                trigger=trigger,
                created_by=user,
                idempotency_key=idempotency_key,
                idempotency_fingerprint=fingerprint,
                deadline_at=(now + timedelta(seconds=task.run_deadline_seconds)
                             if task.run_deadline_seconds else None),
            )
            who = f" by {actor.label}" if actor.is_human else ""
            event_append(run.pk, "run.queued", f"Run queued{who} ({Trigger(trigger).label}).",
                         now=now, actor=actor,
                         data={"trigger": trigger, "params": run.params})
            if task.kind == "pipeline":
                from runs.pipelines import pipeline_start

                pipeline_start(run, now=now)
            else:
                Execution.objects.create(
                    run=run, name=task.slug, position=0,
                    concurrency_key=concurrency_key_render(task.concurrency_key, clean),
                    concurrency_limit=task.concurrency_limit,
                    priority=task.priority,
                )

            audit_write(actor=actor, action="run.launch", obj=run, now=now,
                        project_id=task.project_id,
                        changes={"task": task.slug, "params": run.params, "trigger": trigger})
            run_status_announce(run=run, status="queued", now=now)
            transaction.on_commit(_dispatch)
    except IntegrityError:
        # Two requests with the same key raced; the loser returns the winner's run.
        existing = _idempotent_match(task, idempotency_key, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    return run, True


def concurrency_key_render(template: str, params: dict[str, Any]) -> str:
    """The concurrency key of an execution: the task's template with {{ name }} substituted."""
    if not template:
        return ""
    from jobs.executors.command import render

    return render(template, params)[:200]


def _idempotent_match(task: Task, key: str, fingerprint: str) -> Run | None:
    existing = Run.objects.filter(project_id=task.project_id, idempotency_key=key).first()
    if existing is None:
        return None
    if existing.idempotency_fingerprint != fingerprint:
        raise Conflict(
            "This Idempotency-Key was already used for a different launch request; "
            "use a new key for a new run."
        )
    return existing


def _dispatch() -> None:
    from jobs.dispatch import dispatch_soon

    dispatch_soon()


def api_token_create(*, user, name: str, expires_at: datetime | None = None,
                     actor: Actor | None = None) -> tuple[ApiToken, str]:
    """Create a token; return (row, full token). The full token is never stored or shown again."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("Give the token a name.", fields={"name": ["this field is required"]})
    if len(name) > 100:
        raise InvalidInput("Token name too long.", fields={"name": ["at most 100 characters"]})
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    token = f"{TOKEN_PREFIX}{prefix}_{secret}"
    now = timezone.now()
    with transaction.atomic():
        row = ApiToken.objects.create(
            user=user, name=name, prefix=prefix, token_hash=_token_hash(token),
            expires_at=expires_at,
        )
        audit_write(actor=actor or Actor(user=user, via="system", label=user.get_username()),
                    action="api_token.create", obj=row, now=now, changes={"name": name})
    return row, token


def _token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is safe (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_authenticate(token: str, *, now: datetime | None = None):
    """Return the user for a valid, unrevoked, unexpired token, else None."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    now = now or timezone.now()
    row = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=_token_hash(token), revoked_at__isnull=True)
        .first()
    )
    if row is None or (row.expires_at and row.expires_at <= now) or not row.user.is_active:
        return None
    # Throttle the write: last-used needs minute precision, not a write per request.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.user


def api_token_revoke(*, token: ApiToken, actor: Actor) -> None:
    """Revoke a token (idempotent)."""
    now = timezone.now()
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now
        )
        if updated:
            audit_write(actor=actor, action="api_token.revoke", obj=token, now=now)


def user_password_change(*, user, password: str, actor: Actor) -> None:
    """Set a new password (already validated by the caller's form) and audit it; the old
    password is never recorded, nor the new one."""
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        audit_write(actor=actor, action="user.password_change", obj=user, now=timezone.now())


def run_rerun(*, run: Run, mode: str, actor: Actor, now: datetime | None = None) -> Run:
    """A new run of the same task with the same parameters (secrets included), linked to the
    old one. mode "all" runs everything again; mode "failed" reuses the results of what
    succeeded and runs only what failed or never ran."""
    from runs.errors import TransitionNotAllowed
    from runs.models import EXECUTION_TERMINAL, ExecutionStatus, RunStatus
    from runs.pipelines import APPROVAL_STEP, stage_instantiate

    now = now or timezone.now()
    if mode not in ("all", "failed"):
        raise InvalidInput("mode must be 'all' or 'failed'.", fields={"mode": ["all or failed"]})
    if not run.is_terminal:
        raise TransitionNotAllowed(f"Run {run.pk} is still {run.status}; re-run it once it has "
                                   "ended, or cancel it first.")
    if mode == "failed" and run.status == RunStatus.SUCCEEDED:
        raise TransitionNotAllowed(f"Run {run.pk} succeeded; nothing failed to re-run. Use "
                                   "'re-run all' to run it again.")
    task = run.task
    if not task.enabled:
        raise Conflict(f"Task {task.slug!r} is disabled; ask a maintainer to enable it.")
    pipeline = run.task_snapshot.get("kind") == "pipeline"
    user = actor.user if getattr(actor.user, "pk", None) else None
    with transaction.atomic():
        new = Run.objects.create(
            project_id=run.project_id, task=task, task_snapshot=run.task_snapshot,
            params=run.params, secret_params=run.secret_params, trigger=Trigger.RERUN,
            created_by=user, rerun_of=run, rerun_mode=mode,
            deadline_at=(now + timedelta(seconds=task.run_deadline_seconds)
                         if task.run_deadline_seconds else None),
        )
        label = "failed only" if mode == "failed" else "all"
        event_append(new.pk, "run.queued",
                     f"Re-run ({label}) of run {run.pk} queued by {actor.label}.", now=now,
                     actor=actor, data={"rerun_of": run.pk, "mode": mode})
        audit_write(actor=actor, action="run.rerun", obj=new, now=now,
                    project_id=run.project_id, changes={"rerun_of": run.pk, "mode": mode})
        run_status_announce(run=new, status="queued", now=now)
        if not pipeline:
            old = run.executions.order_by("position", "id").first()
            Execution.objects.create(
                run=new, name=old.name if old else task.slug, position=0,
                concurrency_key=old.concurrency_key if old else "",
                concurrency_limit=old.concurrency_limit if old else 1,
                priority=old.priority if old else 0,
            )
        elif mode == "all":
            from runs.pipelines import pipeline_start

            pipeline_start(new, now=now)
        else:
            state = dict(run.pipeline_state or {"stage": 0, "iteration": 1, "loops": {}})
            # A new run gets a fresh loop-back budget, or a re-run of a run that exhausted
            # max_loops would fail at once without trying again.
            state["loops"] = {}
            index, iteration = state.get("stage", 0), state.get("iteration", 1)
            new.pipeline_state = state
            new.save(update_fields=["pipeline_state"])
            latest: dict[int, int] = {}
            old_rows = list(run.executions.exclude(step=APPROVAL_STEP).order_by("position",
                                                                                 "id"))
            for e in old_rows:
                latest[e.stage_index] = max(latest.get(e.stage_index, 0), e.iteration)
            copies, redo = [], 0
            for e in old_rows:
                if e.stage_index > index or e.iteration != latest[e.stage_index]:
                    continue
                ok = e.status in (ExecutionStatus.SUCCEEDED, ExecutionStatus.SKIPPED)
                if e.stage_index < index and not ok:
                    continue  # an earlier stage that went on despite failures (continue)
                copies.append(Execution(
                    run=new, name=e.name, position=len(copies), stage_index=e.stage_index,
                    stage=e.stage, iteration=e.iteration, step=e.step, matrix=e.matrix,
                    definition=e.definition, params=e.params, input=e.input,
                    concurrency_key=e.concurrency_key, concurrency_limit=e.concurrency_limit,
                    priority=e.priority,
                    status=e.status if ok else ExecutionStatus.PENDING,
                    result=e.result if ok else None, exit_code=e.exit_code if ok else None,
                    outcome=e.outcome if ok else "", reused_from=e if ok else None,
                    finished_at=now if ok else None,
                ))
                redo += 0 if ok else 1
            Execution.objects.bulk_create(copies)
            reused = len(copies) - redo
            event_append(new.pk, "run.rerun_plan",
                         f"Reusing {reused} succeeded execution{'s' if reused != 1 else ''}; "
                         f"running {redo} again.", now=now,
                         data={"reused": reused, "rerun": redo})
            if not any(c.stage_index == index for c in copies):
                stage_instantiate(new, index, iteration, now=now)
            elif all(c.status in EXECUTION_TERMINAL for c in copies):
                from runs.transitions import run_settle

                run_settle(new, now=now)  # the failing stage had nothing left: advance
        transaction.on_commit(_dispatch)
    return new


def run_delete(run: Run, *, actor: Actor) -> None:
    """Delete a finished run with its executions, logs, events and artifacts (whose files go
    from storage once the transaction commits: artifacts.signals). A task's baseline run
    cannot be deleted: later runs are compared with it."""
    if not run.is_terminal:
        raise Conflict(f"Run {run.pk} is {run.status}; cancel it and let it finish first.")
    if Task.objects.filter(baseline_run=run).exists():
        raise Conflict(f"Run {run.pk} is the baseline of its task; clear the baseline first.")
    now = timezone.now()
    with transaction.atomic():
        audit_write(actor=actor, action="run.delete", obj=run, now=now,
                    project_id=run.project_id,
                    changes={"task": run.task_snapshot.get("slug"), "status": run.status})
        run.delete()

