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
def client_for(personas):
    """client_for("carol"): a test Client logged in as that persona (Client kwargs pass on)."""

    def make(name: str, **kwargs) -> Client:
        client = Client(**kwargs)
        client.force_login(personas[name])
        return client

    return make


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


class QCluster:
    """`manage.py qcluster` in a child process on this test's database, with fast test
    timings. `session=True` puts it in its own session so that `signal()` reaches the whole
    tree (sentinel, workers, their commands), as if a machine died or froze."""

    def __init__(self, tmp_path: Path, name: str, *, workers: int = 2, session: bool = False,
                 **env: str) -> None:
        import subprocess
        import sys

        self.name = name
        self.session = session
        self.log_path = tmp_path / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115  closed in stop()
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "manage.py", "qcluster"], cwd=django_settings.BASE_DIR,
            start_new_session=session,
            env=subprocess_env(**{
                "SWITCHYARD_WORK_ROOT": str(tmp_path / "work"),
                "SWITCHYARD_WORKERS": str(workers),
                "SWITCHYARD_HEARTBEAT_SECONDS": "0.3",
                "SWITCHYARD_STOP_CHECK_SECONDS": "0.1",
                "SWITCHYARD_KILL_GRACE": "1",
                "SWITCHYARD_Q_POLL": "0.05",
                "SWITCHYARD_WORKER_ID": name,
                **env,
            }),
            stdout=self.log, stderr=subprocess.STDOUT)

    def signal(self, sig: int) -> None:
        """Signal the whole process tree (needs session=True)."""
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM and wait (it drains); SIGKILL if it does not exit in 30 s."""
        import contextlib
        import signal
        import subprocess

        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self.session:
                    self.signal(signal.SIGCONT)  # a frozen tree cannot drain
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.session:
            with contextlib.suppress(ProcessLookupError):  # nothing of the tree outlives it
                self.signal(signal.SIGKILL)
        self.log.close()
