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
    project_id: int | None = None,
    artifact_globs: Any = None,
) -> dict[str, list[str]]:
    """All problems with a task definition, keyed by field path; empty when valid."""
    from artifacts.globs import globs_errors

    errors = schema_errors(params_schema)
    if artifact_globs is not None:
        for message in globs_errors(artifact_globs):
            errors.setdefault("artifact_globs", []).append(message)
    declared = (
        {f.get("name") for f in params_schema if isinstance(f, dict)}
        if isinstance(params_schema, list)
        else set()
    )

    def add(where: str, message: str) -> None:
        errors.setdefault(where, []).append(message)

    secret = (
        {f.get("name") for f in params_schema if isinstance(f, dict) and f.get("type") == "secret"}
        if isinstance(params_schema, list)
        else set()
    )

    def check_refs(where: str, text: str) -> None:
        for name in sorted(placeholders(text) - declared):
            add(where, f"refers to {{{{ {name} }}}} but the task has no parameter {name!r}")
        # Secrets reach a program only through its environment or files: an argument is
        # readable by every local user in /proc/*/cmdline, and keys and URLs are shown.
        if where.startswith(("spec.argv", "concurrency_key", "spec.url")) or (
                ".command[" in where):
            for name in sorted(placeholders(text) & secret):
                add(where, f"cannot use the secret parameter {name!r}; pass it through the "
                    f"environment ($SWITCHYARD_PARAM_{name.upper()}) or params.json instead")

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
        _command_errors(spec, add, check_refs)
    elif kind == "python":
        unknown = sorted(set(spec) - {"callable"})
        if unknown:
            add("spec", f"unknown keys {unknown}; a python spec has 'callable'")
        from jobs.callables import callable_names

        name = spec.get("callable")
        names = callable_names()
        if not isinstance(name, str) or name not in names:
            add("spec.callable", f"must name a registered callable: {', '.join(names)}")
    elif kind == "http":
        _http_errors(spec, add, check_refs)
    elif kind == "pipeline":
        from runs.pipelines import pipeline_spec_errors

        pipeline_spec_errors(spec, declared=declared, project_id=project_id, add=add,
                             placeholders=placeholders, secret=secret)
    else:
        add("kind", f"unknown task kind {kind!r}")
    return errors


COMMAND_KEYS = {"argv", "env", "exit_codes", "success_outcomes", "files", "limits",
                "isolation", "network"}
LIMIT_KEYS = {"cpu_seconds", "memory_mb", "open_files", "file_size_mb", "processes"}
RESERVED_FILES = ("params.json", "result.json", "input.json")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def _command_errors(spec: dict, add, check_refs) -> None:
    unknown = sorted(set(spec) - COMMAND_KEYS)
    if unknown:
        add("spec", f"unknown keys {unknown}; a command spec takes {sorted(COMMAND_KEYS)}")
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
    codes = spec.get("exit_codes", {})
    if not isinstance(codes, dict):
        add("spec.exit_codes", 'must map exit codes to outcomes, e.g. {"2": "changed"}')
    else:
        for code, outcome in codes.items():
            if not re.fullmatch(r"-?[0-9]{1,3}", str(code)) or not -255 <= int(code) <= 255:
                add(f"spec.exit_codes.{code}", "is not an exit code (-255 to 255)")
            if not isinstance(outcome, str) or not re.match(r"^[a-z_]{1,40}$", outcome):
                add(f"spec.exit_codes.{code}", "the outcome must be a lowercase word")
    success = spec.get("success_outcomes", ["success", "changed", "ok"])
    if not isinstance(success, list) or not all(isinstance(v, str) for v in success):
        add("spec.success_outcomes", "must be a list of outcome names")
    files = spec.get("files", {})
    if not isinstance(files, dict):
        add("spec.files", "must map file names to template text")
    else:
        for name, text in files.items():
            if not FILE_NAME_RE.match(str(name)) or name in RESERVED_FILES:
                add(f"spec.files.{name}", "must be a plain file name in the working directory "
                    "(no '/', no leading '.', not params.json, input.json or result.json)")
            if not isinstance(text, str):
                add(f"spec.files.{name}", "must be a string")
            else:
                check_refs(f"spec.files.{name}", text)
    limits = spec.get("limits", {})
    if not isinstance(limits, dict):
        add("spec.limits", f"must be an object with keys among {sorted(LIMIT_KEYS)}")
    else:
        for key, value in limits.items():
            if key not in LIMIT_KEYS:
                add(f"spec.limits.{key}", f"unknown limit; use {sorted(LIMIT_KEYS)}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                add(f"spec.limits.{key}", "must be a positive whole number")
    if spec.get("isolation", "none") not in ("none", "bwrap"):
        add("spec.isolation", "must be 'none' or 'bwrap'")
    if not isinstance(spec.get("network", True), bool):
        add("spec.network", "must be true or false")


HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def _http_errors(spec: dict, add, check_refs) -> None:
    from urllib.parse import urlsplit

    unknown = sorted(set(spec) - {"method", "url", "headers", "body", "expected_status"})
    if unknown:
        add("spec", f"unknown keys {unknown}")
    if str(spec.get("method", "GET")).upper() not in HTTP_METHODS:
        add("spec.method", f"must be one of {', '.join(sorted(HTTP_METHODS))}")
    url = spec.get("url")
    if not isinstance(url, str) or not url:
        add("spec.url", "must be an http(s) URL")
    else:
        check_refs("spec.url", url)
        head = url.split("{{")[0]
        parts = urlsplit(head)
        if parts.scheme not in ("http", "https") or not parts.netloc or "/" not in \
                head[len(parts.scheme) + 3:]:
            add("spec.url", "must start with http(s)://host/ and parameters may only appear "
                "after the host, in the path or query")
    headers = spec.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        add("spec.headers", "must map header names to strings")
    else:
        for name, value in headers.items():
            check_refs(f"spec.headers.{name}", value)
    if spec.get("body") is not None:
        if not isinstance(spec["body"], str):
            add("spec.body", "must be a string (JSON text, form data...)")
        else:
            check_refs("spec.body", spec["body"])
    expected = spec.get("expected_status", [200])
    if not isinstance(expected, list) or not all(
            isinstance(v, int) and 100 <= v <= 599 for v in expected):
        add("spec.expected_status", "must be a list of HTTP status codes")
