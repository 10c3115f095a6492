"""Python callables that tasks of kind `python` may run, registered in code by a decorator.

A task names a registered callable; it can never name an arbitrary dotted path, so the database
cannot make a worker import and run code nobody registered. Modules listed in the setting
SWITCHYARD_CALLABLE_MODULES are imported at start so their decorators run.

A callable receives a CallContext (log lines, check for stop requests) and the run's parameters
as keyword arguments; it returns a JSON-serialisable result or raises.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, Callable[..., Any]] = {}


def switchyard_callable(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn` under `name` for python tasks."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"python callable {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return register


def callables_load() -> None:
    from django.conf import settings

    for module in settings.SWITCHYARD_CALLABLE_MODULES:
        importlib.import_module(module)


def callable_get(name: str) -> Callable[..., Any] | None:
    callables_load()
    return _REGISTRY.get(name)


def callable_names() -> list[str]:
    callables_load()
    return sorted(_REGISTRY)
