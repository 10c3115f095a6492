"""Typed run parameters: the schema a task declares and validation of the values a launch gives.

A schema is a list of field definitions:

    {"name": "site", "type": "choice", "label": "Site", "help": "...", "required": true,
     "default": "a", "choices": ["a", "b"]}

Types: string, text, integer, number, boolean, choice, secret. Constraints: required, default,
min/max (integer, number), min_length/max_length/regex (string, text, secret), choices (choice).

Values come either from JSON (API: types must match) or from an HTML form (strings: coerced).
Errors are collected per field with messages that say what to fix.
"""

from __future__ import annotations

import math
import re
from typing import Any

PARAM_TYPES = ("string", "text", "integer", "number", "boolean", "choice", "secret")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_KNOWN_KEYS = {
    "name", "type", "label", "help", "required", "default", "min", "max",
    "min_length", "max_length", "regex", "choices", "allow_leading_dash",
}  # fmt: skip
MAX_STRING = 10_000
MAX_TEXT = 1_000_000


def schema_errors(schema: Any) -> dict[str, list[str]]:
    """Check a parameter schema; return {"params_schema[i].field": [messages]} (empty if valid)."""
    errors: dict[str, list[str]] = {}

    def add(where: str, message: str) -> None:
        errors.setdefault(where, []).append(message)

    if not isinstance(schema, list):
        add("params_schema", "must be a list of parameter definitions")
        return errors
    seen: set[str] = set()
    for index, field in enumerate(schema):
        where = f"params_schema[{index}]"
        if not isinstance(field, dict):
            add(where, "must be an object with at least 'name' and 'type'")
            continue
        unknown = sorted(set(field) - _KNOWN_KEYS)
        if unknown:
            add(where, f"unknown keys {unknown}; allowed: {sorted(_KNOWN_KEYS)}")
        name = field.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            add(f"{where}.name", "must be a letter or _ followed by letters, digits or _")
        elif name in seen or name.upper() in {n.upper() for n in seen}:
            # Also case-insensitively: both would be $SWITCHYARD_PARAM_<NAME>.
            add(f"{where}.name", f"duplicate parameter name {name!r}")
        else:
            seen.add(name)
        kind = field.get("type")
        if kind not in PARAM_TYPES:
            add(f"{where}.type", f"must be one of {', '.join(PARAM_TYPES)}")
            continue
        if kind == "choice":
            choices = field.get("choices")
            if (
                not isinstance(choices, list)
                or not choices
                or not all(isinstance(c, str) for c in choices)
            ):
                add(f"{where}.choices", "a choice parameter needs a non-empty list of strings")
        for key in ("min", "max"):
            if key in field and (
                kind not in ("integer", "number") or not _is_number(field[key])
            ):
                add(f"{where}.{key}", f"'{key}' is a number and only for integer or number")
        for key in ("min_length", "max_length"):
            if key in field and (
                kind not in ("string", "text", "secret")
                or not isinstance(field[key], int)
                or isinstance(field[key], bool)
                or field[key] < 0
            ):
                add(f"{where}.{key}", f"'{key}' is a non-negative integer for text types")
        if "regex" in field:
            if kind not in ("string", "text", "secret") or not isinstance(field["regex"], str):
                add(f"{where}.regex", "'regex' is a string and only for text types")
            else:
                try:
                    re.compile(field["regex"])
                except re.error as exc:
                    add(f"{where}.regex", f"not a valid regular expression: {exc}")
        for key in ("required", "allow_leading_dash"):
            if key in field and not isinstance(field[key], bool):
                add(f"{where}.{key}", f"'{key}' must be true or false")
        if "default" in field and where not in errors and f"{where}.choices" not in errors:
            _value, problem = _coerce(field, field["default"], from_form=False)
            if problem:
                add(f"{where}.default", f"default is invalid: {problem}")
            if kind == "secret":
                add(f"{where}.default", "a secret parameter cannot have a default")
    return errors


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coerce(field: dict, value: Any, *, from_form: bool) -> tuple[Any, str | None]:
    """Coerce one value to the field's type; return (value, problem)."""
    kind = field["type"]
    if kind in ("string", "text", "secret", "choice"):
        if not isinstance(value, str):
            return None, "must be a string"
        if "\x00" in value:  # no program argument or database text can hold a NUL byte
            return None, "must not contain NUL characters"
        if not _encodable(value):
            return None, "must be valid Unicode text (it contains a lone surrogate)"
        if kind == "string" and ("\n" in value or "\r" in value) and from_form:
            # A single-line input cannot produce newlines; normalise pasted CRLF away.
            value = value.replace("\r", "").replace("\n", " ")
        limit = MAX_TEXT if kind == "text" else MAX_STRING
        if len(value) > limit:
            return None, f"must be at most {limit} characters"
        if kind == "choice":
            if value not in field.get("choices", []):
                return None, f"must be one of: {', '.join(field.get('choices', []))}"
            return value, None
        if "min_length" in field and len(value) < field["min_length"]:
            return None, f"must be at least {field['min_length']} characters"
        if "max_length" in field and len(value) > field["max_length"]:
            return None, f"must be at most {field['max_length']} characters"
        if "regex" in field and not re.fullmatch(field["regex"], value):
            return None, f"must match the pattern {field['regex']}"
        return value, None
    if kind == "boolean":
        if isinstance(value, bool):
            return value, None
        if from_form and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("on", "true", "1", "yes"):
                return True, None
            if lowered in ("", "off", "false", "0", "no"):
                return False, None
        return None, "must be true or false"
    # integer / number
    number: Any = value
    if from_form and isinstance(value, str):
        text = value.strip()
        try:
            number = int(text) if kind == "integer" else float(text)
        except ValueError:
            return None, "must be a whole number" if kind == "integer" else "must be a number"
    if kind == "integer":
        if isinstance(number, float) and number.is_integer() and not from_form:
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool):
            return None, "must be a whole number"
    else:
        try:
            finite = _is_number(number) and math.isfinite(number)
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            return None, "must be a finite number"
    if "min" in field and number < field["min"]:
        return None, f"must be at least {field['min']}"
    if "max" in field and number > field["max"]:
        return None, f"must be at most {field['max']}"
    return number, None


def params_validate(
    schema: list[dict], raw: Any, *, from_form: bool = False
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Validate launch values against a (valid) schema.

    Returns (clean values, errors by field name). Unknown names are errors so that a typo in an
    API call is caught instead of silently ignored.
    """
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    if not isinstance(raw, dict):
        return {}, {"params": ["must be an object mapping parameter names to values"]}
    declared = {field["name"] for field in schema}
    for name in raw:
        if name not in declared and not (from_form and name == "csrfmiddlewaretoken"):
            known = ", ".join(sorted(declared)) or "none"
            errors.setdefault(str(name), []).append(
                f"unknown parameter; this task takes: {known}"
            )
    for field in schema:
        name = field["name"]
        present = name in raw and raw[name] is not None
        if present and from_form and field["type"] != "boolean" and raw[name] == "":
            present = False
        if not present:
            if field["type"] == "boolean" and from_form:
                clean[name] = False
            elif "default" in field:
                clean[name] = field["default"]
            elif field.get("required", False):
                errors.setdefault(name, []).append("this parameter is required")
            continue
        value, problem = _coerce(field, raw[name], from_form=from_form)
        if problem:
            errors.setdefault(name, []).append(problem)
        else:
            clean[name] = value
    return clean, errors


def secret_names(schema: list[dict]) -> set[str]:
    """Names of the parameters whose values must never be shown."""
    return {field["name"] for field in schema if field.get("type") == "secret"}


def params_redacted(schema: list[dict], values: dict[str, Any]) -> dict[str, Any]:
    """The values as they may be shown and stored in plain text: secrets masked."""
    secrets = secret_names(schema)
    return {name: ("********" if name in secrets else value) for name, value in values.items()}


def leading_dash_errors(argv_templates: list[str], schema: list[dict],
                        values: dict[str, Any]) -> dict[str, list[str]]:
    """A value that is a whole program argument and starts with '-' would be read as an option
    (`ssh -oProxyCommand=...`): refused unless the parameter sets allow_leading_dash."""
    from runs.specs import PLACEHOLDER_RE

    allowed = {f["name"] for f in schema if f.get("allow_leading_dash")}
    errors: dict[str, list[str]] = {}
    for template in argv_templates[1:]:
        match = PLACEHOLDER_RE.fullmatch(template.strip())
        if not match:
            continue
        name = match.group(1)
        value = values.get(name)
        if isinstance(value, str) and value.startswith("-") and name not in allowed:
            errors.setdefault(name, []).append(
                "must not start with '-': the program would read it as an option (a "
                "maintainer can set allow_leading_dash on this parameter)")
    return errors
