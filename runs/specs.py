"""Validation of task definitions (kind + spec + parameter schema), shared by the admin, the
API and `seed_demo`. Errors are keyed by the offending field (`spec.argv[2]`)."""

from __future__ import annotations

import re
from typing import Any

from runs.params import schema_errors

PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def placeholders(text: str) -> set[str]:
    """Parameter names referenced as `{{ name }}` in a template string."""
    return set(PLACEHOLDER_RE.findall(text))


def task_definition_errors(
    *,
    kind: str,
    spec: Any,
    params_schema: Any,
    concurrency_key: str = "",
    retry_backoff: Any = None,
    retry_on: Any = None,
) -> dict[str, list[str]]:
    """All problems with a task definition, keyed by field path; empty when valid."""
    errors = schema_errors(params_schema)
    declared = (
        {f.get("name") for f in params_schema if isinstance(f, dict)}
        if isinstance(params_schema, list)
        else set()
    )

    def add(where: str, message: str) -> None:
        errors.setdefault(where, []).append(message)

    def check_refs(where: str, text: str) -> None:
        for name in sorted(placeholders(text) - declared):
            add(where, f"refers to {{{{ {name} }}}} but the task has no parameter {name!r}")

    if not isinstance(spec, dict):
        add("spec", "must be an object")
        return errors
    if concurrency_key:
        check_refs("concurrency_key", concurrency_key)
    if retry_backoff is not None and (
        not isinstance(retry_backoff, list) or not retry_backoff
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 86400
                   for v in retry_backoff)
    ):
        add("retry_backoff", "must be a non-empty list of whole seconds (0 to 86400), "
            "e.g. [60, 300, 900]")
    if retry_on is not None and (
        not isinstance(retry_on, list) or not all(isinstance(v, str) for v in retry_on)
    ):
        add("retry_on", 'must be a list of outcome names, e.g. ["failure", "timed_out"]')
    if kind == "command":
        unknown = sorted(set(spec) - {"argv", "env"})
        if unknown:
            add("spec", f"unknown keys {unknown}; a command spec has 'argv' and 'env'")
        argv = spec.get("argv")
        if not isinstance(argv, list) or not argv:
            add("spec.argv", "must be a non-empty list of strings (the program and arguments)")
        else:
            for index, arg in enumerate(argv):
                if not isinstance(arg, str):
                    add(f"spec.argv[{index}]", "must be a string")
                else:
                    check_refs(f"spec.argv[{index}]", arg)
            if isinstance(argv[0], str) and placeholders(argv[0]):
                add("spec.argv[0]", "the program itself cannot come from a parameter")
        env = spec.get("env", {})
        if not isinstance(env, dict):
            add("spec.env", "must be an object of NAME: value strings")
        else:
            for name, value in env.items():
                if not ENV_NAME_RE.match(str(name)):
                    add(f"spec.env.{name}", "is not a valid environment variable name")
                if not isinstance(value, str):
                    add(f"spec.env.{name}", "must be a string")
                else:
                    check_refs(f"spec.env.{name}", value)
    else:
        add("kind", f"unknown task kind {kind!r}")
    return errors
