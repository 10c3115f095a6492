"""`manage.py prune [--dry-run]`: apply each project's retention policy (artifacts.prune)."""

from __future__ import annotations

from datetime import UTC

from django.core.management.base import BaseCommand
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from artifacts.prune import prune


class Command(BaseCommand):
    help = ("Delete finished runs outside their project's retention policy, with their logs "
            "and artifacts, and storage files no run refers to. --dry-run only lists them.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true",
                            help="List what would be deleted; delete nothing.")
        parser.add_argument("--now", help="Act as if it were this ISO time (for checks).")
        parser.add_argument("--no-sweep", action="store_true",
                            help="Skip the sweep of unreferenced storage files.")

    def handle(self, *args, dry_run: bool = False, now: str | None = None,
               no_sweep: bool = False, **options) -> None:
        when = timezone.now()
        if now:
            when = parse_datetime(now)
            if when is None:
                self.stderr.write(f"--now {now!r} is not an ISO date-time such as "
                                  "2026-01-31T12:00:00Z")
                raise SystemExit(2)
            if timezone.is_naive(when):
                when = timezone.make_aware(when, UTC)
        report = prune(now=when, dry_run=dry_run, sweep=not no_sweep)
        verb = "would delete" if dry_run else "deleted"
        for run_id, project, why in report.runs:
            self.stdout.write(f"{verb} run {run_id} of {project}: {why}")
        for key in report.orphan_keys:
            self.stdout.write(f"{verb} unreferenced file {key}")
        self.stdout.write(
            f"{'Dry run: would delete' if dry_run else 'Deleted'} {len(report.runs)} run(s) "
            f"with {report.files} artifact file(s), {report.bytes / 1024 / 1024:.1f} MiB, and "
            f"{len(report.orphan_keys)} unreferenced file(s).")
