"""Raw django-q2 task used as the baseline by bench/engine.py."""

import time


def raw_noop(enqueued_at: float) -> float:
    """Return the wall-clock start time, so latency = start - enqueued_at."""
    return time.time()
