"""Management commands: seed_demo and create_api_token."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from runs.models import Membership, Project, Task
from runs.services import api_token_authenticate


def _call(*args, **kwargs) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def test_seed_demo_is_idempotent_and_prints_the_login(db, settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path
    monkeypatch.delenv("SWITCHYARD_ADMIN_PASSWORD", raising=False)
    first = _call("seed_demo")
    second = _call("seed_demo")
    password = first.split("Login: admin / ")[1].split()[0]
    assert f"Login: admin / {password}" in second
    assert Project.objects.filter(slug="demo").count() == 1
    assert sorted(Task.objects.values_list("slug", flat=True)) == [
        "agent-pipeline", "deploy", "fail", "hello", "slow", "visual-batch"]
    assert Membership.objects.get(user__username="admin").role == "maintainer"
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="admin").check_password(password)


def test_seed_demo_takes_the_password_from_the_environment(db, settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path
    monkeypatch.setenv("SWITCHYARD_ADMIN_PASSWORD", "s3cret-from-env")
    assert "Login: admin / s3cret-from-env" in _call("seed_demo")
    assert not (tmp_path / "admin-password").exists()


def test_create_api_token_prints_only_a_working_token(personas):
    out = _call("create_api_token", "--user", "bob").strip()
    assert "\n" not in out
    assert api_token_authenticate(out) == personas["bob"]


def test_create_api_token_for_an_unknown_user_fails_clearly(db):
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_token", "--user", "ghost")
