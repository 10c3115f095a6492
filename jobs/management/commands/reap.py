"""Run one reaper pass now (the same pass the minute schedule runs) and print what it did."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from jobs.reaper import reap


class Command(BaseCommand):
    help = "Expire lost leases, redeliver unclaimed executions, enforce deadlines, repair runs."

    def handle(self, *args, **options) -> None:
        self.stdout.write(json.dumps(reap().as_dict()))
