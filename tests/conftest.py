"""Shared fixtures: personas (alice maintainer, bob operator, carol viewer, mallory outsider) in
project `demo`, API clients with real tokens, and a wait helper that polls a condition."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client

from runs.models import Role
from runs.services import api_token_create
from tests.factories import MembershipFactory, ProjectFactory, TaskFactory, UserFactory

PASSWORD = "correct horse battery staple"


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an exited, unreaped child)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition: Callable[[], object], *, timeout: float = 30.0,
             interval: float = 0.05, message: str = "condition") -> object:
    """Poll until condition() is truthy; fail the test with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def _isolated_dirs(settings, tmp_path: Path) -> None:
    settings.SWITCHYARD_WORK_ROOT = tmp_path / "work"
    # Artifacts of each test in its own directory (subprocess_env passes it to workers).
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        **settings.STORAGES["artifacts"],
        "OPTIONS": {**settings.STORAGES["artifacts"].get("OPTIONS", {}),
                    "location": str(tmp_path / "artifacts")},
    }}
    settings.SWITCHYARD_KILL_GRACE = 1.0
    # In-process executions run inside the test's transaction, which the heartbeat thread's own
    # connection cannot see; tests that exercise heartbeats set a short interval themselves.
    settings.SWITCHYARD_HEARTBEAT_SECONDS = 600
    settings.SWITCHYARD_STOP_CHECK_SECONDS = 600
    # Real hashing costs ~0.3 s per persona; the hasher is not what these tests are about.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Pages ask "is a worker alive?" through a short cache; tests ask the database every time,
    # so what a page shows (and the queries it makes) never depends on an earlier test.
    settings.SWITCHYARD_WORKER_STATUS_CACHE_SECONDS = 0


@pytest.fixture
def project(db):
    return ProjectFactory(slug="demo", name="Demo")


@pytest.fixture
def personas(project):
    """alice (maintainer), bob (operator), carol (viewer) of `demo`; mallory in no project."""
    people = {
        "alice": UserFactory(username="alice"),
        "bob": UserFactory(username="bob"),
        "carol": UserFactory(username="carol"),
        "mallory": UserFactory(username="mallory"),
    }
    MembershipFactory(project=project, user=people["alice"], role=Role.MAINTAINER)
    MembershipFactory(project=project, user=people["bob"], role=Role.OPERATOR)
    MembershipFactory(project=project, user=people["carol"], role=Role.VIEWER)
    return people


@pytest.fixture
def hello_task(project):
    return TaskFactory(
        project=project,
        slug="hello",
        spec={"argv": ["echo", "Hello, {{ name }}!"]},
        params_schema=[
            {"name": "name", "type": "string", "required": True, "max_length": 50},
            {"name": "count", "type": "integer", "min": 1, "max": 10, "default": 1},
        ],
    )


class ApiClient:
    """A Django test client that sends a real bearer token."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **kwargs):
        return self.client.get(path, headers={**self.headers, **kwargs.pop("headers", {})},
                               **kwargs)

    def post(self, path: str, data=None, *, raw: str | None = None, **kwargs):
        body = raw if raw is not None else __import__("json").dumps(data or {})
        return self.client.post(path, body, content_type="application/json",
                                headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture
def api_for(personas):
    def make(name: str | None) -> ApiClient:
        if name is None:
            return ApiClient(None)
        _row, token = api_token_create(user=personas[name], name="test")
        return ApiClient(token)

    return make


def database_url_for_subprocess() -> str:
    """DATABASE_URL pointing a child process at the database this test uses."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess()
    env["ARTIFACTS_ROOT"] = str(django_settings.ARTIFACTS_ROOT)
    env.update(extra)
    return env
