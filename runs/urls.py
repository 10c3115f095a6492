"""End-user page routes: `runs.views` (dashboard, projects, launch, run list, the worker
banner's poll), `runs.run_views` (the run page and its live poll), `runs.control_views` (the
run controls), `runs.member_views` (a project's members) and `runs.account_views` (API tokens
and password)."""

from django.urls import path, register_converter

from runs import account_views, control_views, member_views, run_views, views


class IdConverter:
    """A database id: 1 to 18 digits, so a huge number is a 404 and never reaches the database
    as an integer it cannot hold (a 500 on both SQLite and PostgreSQL)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:slug>/", views.project_detail, name="project_detail"),
    path("p/<slug:slug>/members/", member_views.project_members, name="project_members"),
    path("p/<slug:slug>/members/add", member_views.member_add_view, name="member_add"),
    path("p/<slug:slug>/members/role", member_views.member_role_view, name="member_role"),
    path("p/<slug:slug>/members/remove", member_views.member_remove_view, name="member_remove"),
    path("p/<slug:slug>/tasks/<slug:task_slug>/launch", views.task_launch, name="task_launch"),
    path("account/", account_views.account, name="account"),
    path("account/tokens", account_views.token_create, name="token_create"),
    path("account/tokens/<id:token_id>/revoke", account_views.token_revoke, name="token_revoke"),
    path("account/password", account_views.password_change, name="password_change"),
    path("status/worker-banner", views.worker_banner, name="worker_banner"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/<id:run_id>/", run_views.run_detail, name="run_detail"),
    path("runs/<id:run_id>/live", run_views.run_live, name="run_live"),
    path("runs/<id:run_id>/cancel", control_views.run_cancel, name="run_cancel"),
    path("runs/<id:run_id>/pause", control_views.run_pause, name="run_pause"),
    path("runs/<id:run_id>/resume", control_views.run_resume, name="run_resume"),
    path("runs/<id:run_id>/rerun", control_views.run_rerun, name="run_rerun"),
    path("executions/<id:execution_id>/cancel", control_views.execution_cancel,
         name="execution_cancel"),
    path("executions/<id:execution_id>/approve", control_views.execution_approve,
         name="execution_approve"),
    path("executions/<id:execution_id>/reject", control_views.execution_reject,
         name="execution_reject"),
    path(
        "runs/<id:run_id>/executions/<id:execution_id>/log.txt",
        run_views.execution_log,
        name="execution_log",
    ),
]

# Schedules (runs.schedule_views).
from runs import schedule_views  # noqa: E402

urlpatterns += [
    path("p/<slug:slug>/schedules", schedule_views.project_schedules, name="project_schedules"),
    path("schedules/<id:schedule_id>/toggle", schedule_views.schedule_toggle,
         name="schedule_toggle"),
    path("schedules/<id:schedule_id>/delete", schedule_views.schedule_remove,
         name="schedule_delete"),
]
