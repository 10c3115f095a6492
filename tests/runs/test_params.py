"""Parameter schemas and task definitions: validation with messages naming the field."""

from __future__ import annotations

import pytest

from runs.params import params_validate, schema_errors
from runs.specs import task_definition_errors

SCHEMA = [
    {"name": "site", "type": "choice", "choices": ["a", "b"], "required": True},
    {"name": "count", "type": "integer", "min": 1, "max": 5, "default": 2},
    {"name": "ratio", "type": "number", "min": 0, "max": 1},
    {"name": "dry_run", "type": "boolean", "default": True},
    {"name": "note", "type": "text", "max_length": 20},
    {"name": "ref", "type": "string", "regex": "v[0-9]+"},
    {"name": "token", "type": "secret"},
]


def test_valid_json_values_are_kept_with_defaults():
    clean, errors = params_validate(SCHEMA, {"site": "a", "ratio": 0.5, "ref": "v12"})
    assert errors == {}
    assert clean == {"site": "a", "count": 2, "ratio": 0.5, "dry_run": True, "ref": "v12"}


def test_form_strings_are_coerced():
    clean, errors = params_validate(
        SCHEMA, {"site": "b", "count": "3", "ratio": "0.25", "dry_run": "on", "note": ""},
        from_form=True,
    )
    assert errors == {}
    assert clean["count"] == 3 and clean["ratio"] == 0.25 and clean["dry_run"] is True


def test_an_unchecked_form_checkbox_is_false():
    clean, _ = params_validate(SCHEMA, {"site": "a"}, from_form=True)
    assert clean["dry_run"] is False


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        ({"site": "c"}, "site", "one of: a, b"),
        ({"site": "a", "count": True}, "count", "whole number"),
        ({"site": "a", "count": 1.5}, "count", "whole number"),
        ({"site": "a", "count": 9}, "count", "at most 5"),
        ({"site": "a", "ratio": float("nan")}, "ratio", "finite"),
        ({"site": "a", "ratio": "0.5"}, "ratio", "finite number"),
        ({"site": "a", "dry_run": "yes"}, "dry_run", "true or false"),
        ({"site": "a", "note": "x" * 21}, "note", "at most 20"),
        ({"site": "a", "ref": "x1"}, "ref", "pattern"),
        ({"count": 1}, "site", "required"),
    ],
)
def test_bad_values_get_a_message_for_their_field(raw, field, fragment):
    _clean, errors = params_validate(SCHEMA, raw)
    assert any(fragment in m for m in errors[field]), errors


def test_a_valid_schema_has_no_errors():
    assert schema_errors(SCHEMA) == {}


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ("nope", "params_schema"),
        ([{"name": "1bad", "type": "string"}], "params_schema[0].name"),
        ([{"name": "a", "type": "float"}], "params_schema[0].type"),
        ([{"name": "a", "type": "choice"}], "params_schema[0].choices"),
        ([{"name": "a", "type": "string"}, {"name": "a", "type": "string"}],
         "params_schema[1].name"),
        ([{"name": "a", "type": "string", "regex": "("}], "params_schema[0].regex"),
        ([{"name": "a", "type": "integer", "default": "x"}], "params_schema[0].default"),
        ([{"name": "a", "type": "string", "min": 1}], "params_schema[0].min"),
        ([{"name": "a", "type": "secret", "default": "pw"}], "params_schema[0].default"),
        ([{"name": "a", "type": "string", "colour": 1}], "params_schema[0]"),
    ],
)
def test_an_invalid_schema_names_the_field(schema, where):
    assert where in schema_errors(schema)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({}, "spec.argv"),
        ({"argv": "echo hi"}, "spec.argv"),
        ({"argv": ["echo", 5]}, "spec.argv[1]"),
        ({"argv": ["echo", "{{ missing }}"]}, "spec.argv[1]"),
        ({"argv": ["{{ name }}"]}, "spec.argv[0]"),
        ({"argv": ["echo"], "env": {"1X": "a"}}, "spec.env.1X"),
        ({"argv": ["echo"], "shell": "rm -rf /"}, "spec"),
    ],
)
def test_an_invalid_command_spec_names_the_field(spec, where):
    errors = task_definition_errors(kind="command", spec=spec,
                                    params_schema=[{"name": "name", "type": "string"}])
    assert where in errors, errors


def test_task_clean_reports_errors_on_the_model_fields(project):
    from django.core.exceptions import ValidationError

    from tests.factories import TaskFactory

    task = TaskFactory.build(project=project, spec={"argv": ["echo", "{{ nope }}"]},
                             params_schema=[])
    with pytest.raises(ValidationError) as info:
        task.full_clean()
    assert "spec" in info.value.message_dict
    assert "spec.argv[1]" in info.value.message_dict["spec"][0]
