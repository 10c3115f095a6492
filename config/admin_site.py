"""The staff back office's admin site: Django's own, plus the workers and queue page
(/admin/workers/, `jobs.admin_views`) linked from the index and the sidebar.

Installed in place of `django.contrib.admin` (INSTALLED_APPS names SwitchyardAdminConfig), so
`admin.site` and every `@admin.register` in the apps use this site.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse

WORKERS_PERMISSION = "jobs.view_workerprocess"


class SwitchyardAdminSite(admin.AdminSite):
    site_header = "Switchyard back office"
    site_title = "Switchyard admin"
    index_title = "Back office"

    def get_urls(self) -> list[URLPattern]:
        from jobs.admin_views import workers_queue

        # Before Django's own: its last pattern catches every other path.
        return [
            path("workers/", self.admin_view(workers_queue), name="workers_queue"),
        ] + super().get_urls()

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict]:
        apps = super().get_app_list(request, app_label)
        if app_label is None and request.user.has_perm(WORKERS_PERMISSION):
            url = reverse("admin:workers_queue", current_app=self.name)
            # First: it is where staff look when something is stuck.
            apps.insert(0, {
                "name": "Operations",
                "app_label": "operations",
                "app_url": url,
                "has_module_perms": True,
                "models": [{
                    "model": None,
                    "name": "Workers and queue",
                    "object_name": "WorkersQueue",
                    "perms": {"view": True},
                    "admin_url": url,
                    "add_url": None,
                    "view_only": True,
                }],
            })
        return apps


class SwitchyardAdminConfig(AdminConfig):
    default_site = "config.admin_site.SwitchyardAdminSite"
