"""Built-in python callables: small, useful, and used by the demo and the benchmark."""

from __future__ import annotations

import time
from typing import Any

from jobs.callables import switchyard_callable


@switchyard_callable("noop")
def noop(ctx, **params: Any) -> dict:
    """Does nothing; measures the engine's own overhead."""
    return {"ok": True}


@switchyard_callable("echo")
def echo(ctx, **params: Any) -> dict:
    """Logs and returns its parameters."""
    for name, value in sorted(params.items()):
        ctx.log(f"{name} = {value!r}")
    return {"params": params}


@switchyard_callable("sleep")
def sleep(ctx, seconds: float = 1.0, **params: Any) -> dict:
    """Sleeps, checking for stop requests every 0.1 s."""
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        if ctx.should_stop():
            raise InterruptedError("stopped while sleeping")
        time.sleep(0.1)
    return {"slept": seconds}
