"""Page input shaping: the launch form generated from a task's parameter schema, the run
list's filters read from a query string, the small inputs of the run controls (a cancel
reason, an approval comment, a re-run mode), and the forms of the members and account pages.

Parameter values are validated in one place, `runs.params` (shared with the API); this module only
turns a schema plus submitted strings into what the launch template renders, and rejects the
inputs that would otherwise reach the database as something it cannot store (NUL characters,
slugs that cannot exist).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django import forms

from runs.models import Role
from runs.selectors import RunFilters

# Parameter type -> template widget.
WIDGETS = {
    "string": "text",
    "text": "textarea",
    "integer": "number",
    "number": "number",
    "boolean": "checkbox",
    "choice": "select",
    "secret": "password",
}
TRUE_STRINGS = frozenset({"on", "true", "1", "yes"})
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
NUL_MESSAGE = "contains a NUL character, which cannot be stored; remove it"


@dataclass
class ParamField:
    """One launch-form input, ready to render."""

    name: str
    type: str
    label: str
    help: str
    required: bool
    value: str = ""
    checked: bool = False
    choices: list[str] = field(default_factory=list)
    min: Any = None
    max: Any = None
    max_length: int | None = None
    min_length: int | None = None
    regex: str = ""
    default: str = ""  # the schema's default, shown as a hint when the value differs
    errors: list[str] = field(default_factory=list)

    @property
    def hints(self) -> list[str]:
        """The constraints in words, so nobody has to find them out from an error."""
        hints = []
        if self.min is not None and self.max is not None:
            hints.append(f"from {self.min} to {self.max}")
        elif self.min is not None:
            hints.append(f"at least {self.min}")
        elif self.max is not None:
            hints.append(f"at most {self.max}")
        if self.min_length and self.max_length is not None:
            hints.append(f"{self.min_length} to {self.max_length} characters")
        elif self.min_length:
            hints.append(f"at least {self.min_length} characters")
        elif self.max_length is not None and self.type != "text":
            hints.append(f"at most {self.max_length} characters")
        if self.default and self.type not in ("boolean", "secret"):
            hints.append(f"default {self.default}")
        return hints

    @property
    def widget(self) -> str:
        return WIDGETS[self.type]

    @property
    def input_id(self) -> str:
        return f"param-{self.name}"

    @property
    def step(self) -> str:
        return "1" if self.type == "integer" else "any"


def param_fields(
    schema: list[dict],
    *,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, list[str]] | None = None,
) -> list[ParamField]:
    """Fields for the schema. Without `values` (a fresh form) defaults are shown; with them
    (a re-rendered or pre-filled form) the submitted strings are. Secrets are never filled in:
    a secret must not travel back to the browser, not even the one the user just typed."""
    errors = errors or {}
    result = []
    for definition in schema:
        name = definition["name"]
        kind = definition["type"]
        item = ParamField(
            name=name,
            type=kind,
            label=definition.get("label") or name.replace("_", " ").capitalize(),
            help=definition.get("help", ""),
            required=bool(definition.get("required", False)),
            choices=list(definition.get("choices", [])),
            min=definition.get("min"),
            max=definition.get("max"),
            max_length=definition.get("max_length"),
            min_length=definition.get("min_length"),
            regex=str(definition.get("regex") or ""),
            default="" if definition.get("default") is None else str(definition["default"]),
            errors=list(errors.get(name, [])),
        )
        if kind != "secret":
            if values is None:
                default = definition.get("default")
                if kind == "boolean":
                    item.checked = default is True
                elif default is not None:
                    item.value = str(default)
            else:
                submitted = values.get(name, "")
                if kind == "boolean":
                    item.checked = submitted.strip().lower() in TRUE_STRINGS
                else:
                    item.value = submitted
        result.append(item)
    return result


def launch_values(schema: list[dict], data: Mapping[str, Any]) -> dict[str, str]:
    """The submitted strings for the schema's names only. A name absent from the submission
    stays absent (an unchecked checkbox sends nothing, which params_validate reads as false)."""
    return {
        definition["name"]: str(data.get(definition["name"]))
        for definition in schema
        if definition["name"] in data
    }


def prefill_values(schema: list[dict], data: Mapping[str, Any]) -> dict[str, str] | None:
    """Values to pre-fill a fresh launch form from a query string ("launch again"), or None when
    the query names none of the schema's parameters. Secrets and NUL-bearing values are dropped."""
    types = {definition["name"]: definition["type"] for definition in schema}
    values = {
        name: value
        for name, value in launch_values(schema, data).items()
        if "\x00" not in value and types[name] != "secret"
    }
    if not values:
        return None
    # Parameters not named in the link keep their defaults.
    for definition in schema:
        name, kind = definition["name"], definition["type"]
        if name in values or "default" not in definition or kind == "secret":
            continue
        default = definition["default"]
        values[name] = ("on" if default else "") if kind == "boolean" else str(default)
    return values


def nul_errors(values: Mapping[str, str]) -> dict[str, list[str]]:
    """PostgreSQL cannot store U+0000 in text or jsonb; refuse it as a field error, not a 500."""
    return {name: [NUL_MESSAGE] for name, value in values.items() if "\x00" in value}


FILTER_NAMES = ("project", "task", "status", "trigger", "by", "from", "to", "q")
USERNAME_RE = re.compile(r"^[\w.@+-]{1,150}$")
SEARCH_MAX = 100
RUN_ID_RE = re.compile(r"^#?([0-9]{1,18})$")


def _date(value: str, name: str, errors: dict[str, list[str]]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[name] = [f"{value[:40]!r} is not a date; use the form YYYY-MM-DD"]
        return None


def run_filters_parse(query: Mapping[str, Any]) -> tuple[RunFilters, dict[str, str], dict]:
    """(filters, the raw values for re-rendering the form, errors by filter name).

    `by` is a username; `from` and `to` are days (UTC), both included; `q` is a run id
    ("41" or "#41") or part of a task's name or slug.
    """
    raw = {name: str(query.get(name, "") or "").strip() for name in FILTER_NAMES}
    errors: dict[str, list[str]] = {}
    for name, value in raw.items():
        if "\x00" in value:
            errors[name] = [NUL_MESSAGE]
        elif name in ("project", "task") and value and not SLUG_RE.match(value):
            errors[name] = [
                f"{value[:80]!r} is not a valid slug (letters, digits, - and _, at most 64)"
            ]
        elif name == "by" and value and not USERNAME_RE.match(value):
            errors[name] = [f"{value[:80]!r} is not a username (letters, digits and @.+-_)"]
        elif name == "q" and len(value) > SEARCH_MAX:
            errors[name] = [f"is {len(value)} characters long; search with at most {SEARCH_MAX}"]
    clean = {name: ("" if name in errors else value) for name, value in raw.items()}
    start = _date(clean["from"], "from", errors)
    end = _date(clean["to"], "to", errors)
    if start and end and start > end:
        errors["to"] = ["is before the From day; swap them or clear one"]
    run_id, text = None, None
    found = RUN_ID_RE.match(clean["q"])
    if found:
        run_id = int(found.group(1))
    elif clean["q"]:
        text = clean["q"]
    filters = RunFilters(
        project=clean["project"] or None,
        task=clean["task"] or None,
        status=clean["status"] or None,
        trigger=clean["trigger"] or None,
        created_by=clean["by"] or None,
        created_after=_day_start(start),
        # Up to the end of the To day; the last representable day has no day after it.
        created_before=_day_start(end + timedelta(days=1)) if end and end < date.max else None,
        run_id=run_id,
        text=text,
    )
    for name, messages in filters.errors().items():
        errors.setdefault(name, []).extend(messages)
    return filters, raw, errors


def _day_start(day: date | None) -> datetime | None:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


# runs.transitions stores "cancelled by <username>: <reason>" in Execution.cancel_reason, a
# varchar(300) that PostgreSQL enforces (a longer value is a 500). Usernames may have 150
# characters and the prefix adds 15, which leaves 135: keep the reason within that.
REASON_MAX_LENGTH = 120


def control_reason(data: Mapping[str, Any]) -> tuple[str, str]:
    """(the optional reason of a run control, an error message or '') from a submitted form."""
    reason = str(data.get("reason", "") or "").strip()
    if "\x00" in reason:
        return "", f"The reason {NUL_MESSAGE} and try again."
    if len(reason) > REASON_MAX_LENGTH:
        return "", (f"The reason is {len(reason)} characters long; shorten it to "
                    f"{REASON_MAX_LENGTH} or fewer and try again.")
    return reason, ""


# An approval's comment goes into the execution's result (JSON), the event message and the
# audit row, none of which has a length limit; this bound keeps a pasted novel out of them.
APPROVAL_COMMENT_MAX_LENGTH = 1000


def approval_comment(data: Mapping[str, Any]) -> tuple[str, str]:
    """(the optional comment of an approve/reject, an error message or '') from a form."""
    comment = str(data.get("comment", "") or "").strip()
    if "\x00" in comment:
        return "", f"The comment {NUL_MESSAGE} and try again."
    if len(comment) > APPROVAL_COMMENT_MAX_LENGTH:
        return "", (f"The comment is {len(comment)} characters long; shorten it to "
                    f"{APPROVAL_COMMENT_MAX_LENGTH} or fewer and try again.")
    return comment, ""


RERUN_MODES = {"all": "all", "failed": "failed only"}


def rerun_mode(data: Mapping[str, Any]) -> tuple[str, str]:
    """(the re-run mode, "all" when not given, or an error message) from a submitted form."""
    mode = str(data.get("mode", "") or "all").strip()
    if mode not in RERUN_MODES:
        return "", (f"Unknown re-run mode {mode[:40]!r}: use the Re-run all or Re-run failed "
                    "only button.")
    return mode, ""


# --- members and account (Django forms: they refuse NUL characters and over-long values) ---


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150, label="Username")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER, label="Role")


class MemberRoleForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)


class MemberRemoveForm(forms.Form):
    username = forms.CharField(max_length=150)


# Token lifetimes offered on the account page, in days ("" = never expires).
TOKEN_EXPIRY_CHOICES = [("7", "7 days"), ("30", "30 days"), ("90", "90 days"),
                        ("365", "1 year"), ("", "Never")]


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name",
                           help_text="What the token is for, e.g. “CI deploy job”.")
    expires_in = forms.ChoiceField(choices=TOKEN_EXPIRY_CHOICES, initial="90", required=False,
                                   label="Expires after")

    def expires_in_days(self) -> int | None:
        value = self.cleaned_data.get("expires_in") or ""
        return int(value) if value else None
