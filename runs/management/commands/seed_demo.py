"""Create (or update) the demo: superuser `admin`, project `demo` and its tasks. Idempotent."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from runs.demo import DEMO_PIPELINES, DEMO_TASKS
from runs.models import Membership, Project, Role, Task
from runs.specs import task_definition_errors


class Command(BaseCommand):
    help = (
        "Create the demo project with tasks hello, slow and fail, and a superuser 'admin'. "
        "The password comes from SWITCHYARD_ADMIN_PASSWORD or is generated and printed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    @transaction.atomic
    def handle(self, *args, username: str, **options) -> None:
        for task in DEMO_TASKS + DEMO_PIPELINES:
            errors = task_definition_errors(kind=task.get("kind", "command"), spec=task["spec"],
                                            params_schema=task["params_schema"],
                                            artifact_globs=task.get("artifact_globs", []))
            if errors:  # a programming error in runs/demo.py, caught before anything is saved
                raise CommandError(f"demo task {task['slug']} is invalid: {errors}")
        User = get_user_model()
        password = os.environ.get("SWITCHYARD_ADMIN_PASSWORD", "")
        user = User.objects.filter(username=username).first()
        created_user = user is None
        if user is None:
            password = password or secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username=username, email="", password=password)
        elif password:
            user.set_password(password)
            user.save(update_fields=["password"])

        project, _ = Project.objects.get_or_create(
            slug="demo",
            defaults={"name": "Demo", "description": "Tasks that show what Switchyard does."},
        )
        Membership.objects.update_or_create(
            project=project, user=user, defaults={"role": Role.MAINTAINER}
        )
        for definition in DEMO_TASKS + DEMO_PIPELINES:
            Task.objects.update_or_create(
                project=project,
                slug=definition["slug"],
                defaults={key: value for key, value in definition.items() if key != "slug"},
            )
        self.stdout.write(f"Demo project 'demo' with tasks: "
                          f"{', '.join(t['slug'] for t in DEMO_TASKS + DEMO_PIPELINES)}")
        # Development convenience: remember a generated password (owner-only file under var/)
        # so that every `make run` can print the login, not only the first.
        remembered = Path(settings.VAR_DIR) / f"{username}-password"
        if created_user and not os.environ.get("SWITCHYARD_ADMIN_PASSWORD"):
            remembered.write_text(password)
            remembered.chmod(0o600)
        elif not password and remembered.exists():
            candidate = remembered.read_text().strip()
            if user.check_password(candidate):
                password = candidate
        if password:
            self.stdout.write(f"Login: {username} / {password}")
        else:
            self.stdout.write(
                f"Login: {username} (existing user; password unchanged; set "
                "SWITCHYARD_ADMIN_PASSWORD and re-run seed_demo to reset it)"
            )
