"""Create an API token for a user and print only the token (it is shown once, stored hashed)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from runs.errors import ApplicationError
from runs.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for --user and print it. Store it now: it is not shown again."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", required=True, help="username the token acts as")
        parser.add_argument("--name", default="cli", help="a label to recognise the token by")
        parser.add_argument("--days", type=int, default=None,
                            help="expire after this many days (default: never)")

    def handle(self, *args, user: str, name: str, days: int | None, **options) -> None:
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"No user named {user!r}.")
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        expires = timezone.now() + timedelta(days=days) if days else None
        try:
            _row, token = api_token_create(user=owner, name=name, expires_at=expires)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(token)
