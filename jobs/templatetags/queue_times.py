"""Template filters of the workers and queue page: ages to the second ("12 s", "3 min 5 s"),
where Django's timesince says "0 minutes" for everything under a minute, which is exactly the
range a heartbeat lives in."""

from __future__ import annotations

from datetime import datetime

from django import template

register = template.Library()


def seconds_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def age(when: datetime | None, now: datetime | None) -> str:
    """How long before `now` `when` was ("" if unknown); `now` comes from the view, so every
    row is measured against the same instant."""
    if when is None or now is None:
        return ""
    return seconds_text((now - when).total_seconds())
