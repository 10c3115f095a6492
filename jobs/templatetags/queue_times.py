"""Template filters of the workers and queue page: ages to the second ("12 s", "3 min 5 s"),
where Django's timesince says "0 minutes" for everything under a minute, which is exactly the
range a heartbeat lives in."""

from __future__ import annotations

from datetime import datetime

from django import template

from jobs.selectors import seconds_text

register = template.Library()


@register.filter
def age(when: datetime | None, now: datetime | None) -> str:
    """How long before `now` `when` was ("" if unknown); `now` comes from the view, so every
    row is measured against the same instant."""
    if when is None or now is None:
        return ""
    return seconds_text((now - when).total_seconds())
