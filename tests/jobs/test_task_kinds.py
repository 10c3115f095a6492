"""Python and HTTP task kinds, exit-code classification, rendered files, resource limits and
bubblewrap isolation, with real processes and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import shutil
import sys
import threading

import pytest

from jobs.dispatch import dispatch
from jobs.tasks import execution_run
from runs.models import Attempt, ExecutionStatus, Run, RunStatus
from runs.services import run_launch
from runs.transitions import Actor
from tests.factories import TaskFactory
from tests.jobs.conftest import log_text

PY = sys.executable


def _run(project, *, kind="command", spec, schema=None, params=None, **task_fields) -> Run:
    task = TaskFactory(project=project, kind=kind, spec=spec, params_schema=schema or [],
                       **task_fields)
    task.full_clean()  # the definition must pass the same validation as the admin and API
    run, _ = run_launch(task=task, raw_params=params or {}, actor=Actor(via="api", label="t"))
    dispatch()
    execution_run(run.executions.get().pk)
    run.refresh_from_db()
    return run


def test_a_python_callable_gets_params_and_returns_the_result(project):
    run = _run(project, kind="python", spec={"callable": "echo"},
               schema=[{"name": "site", "type": "string"}], params={"site": "a"})
    assert run.status == RunStatus.SUCCEEDED
    assert run.executions.get().result == {"params": {"site": "a"}}
    assert "site = 'a'" in log_text(run)


def test_an_unregistered_callable_is_refused_when_saving(project):
    from django.core.exceptions import ValidationError

    task = TaskFactory.build(project=project, kind="python", params_schema=[],
                             spec={"callable": "os.system"})
    with pytest.raises(ValidationError) as info:
        task.full_clean()
    assert "spec.callable" in str(info.value)


def test_a_python_callable_that_raises_fails_with_its_traceback(project, settings):
    from jobs.callables import switchyard_callable

    @switchyard_callable("test_boom")
    def boom(ctx, **params):
        raise RuntimeError("kaboom")

    run = _run(project, kind="python", spec={"callable": "test_boom"})
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error.startswith("RuntimeError: kaboom")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802  http.server's naming
        self.server.received.append(dict(self.headers))
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode()
        status = 503 if "/down" in self.path else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"path": self.path, "body": body,
                                     "auth": self.headers.get("X-Token")}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_an_http_task_sends_the_request_and_keeps_the_response(project, http_server):
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    run = _run(
        project, kind="http",
        spec={"method": "POST", "url": base + "/hooks/{{ site }}",
              "headers": {"X-Token": "{{ token }}"}, "body": '{"site": "{{ site }}"}',
              "expected_status": [200]},
        schema=[{"name": "site", "type": "string"}, {"name": "token", "type": "secret"}],
        params={"site": "a b/../c", "token": "tok-123-secret"},
    )
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    result = run.executions.get().result
    assert result["status_code"] == 200
    echoed = json.loads(result["body"])
    assert echoed["path"] == "/hooks/a%20b%2F%2E%2E%2Fc"  # the value stays inside the path
    assert http_server.received[0]["X-Token"] == "tok-123-secret"  # the server got it...
    assert echoed["auth"] == "********"  # ...but the kept response masks it
    assert "tok-123-secret" not in log_text(run)


def test_an_unexpected_http_status_fails(project, http_server):
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    run = _run(project, kind="http", spec={"method": "POST", "url": base + "/down",
                                           "expected_status": [200]})
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error == "HTTP 503; expected 200"


def test_an_unreachable_host_is_the_unreachable_outcome(project):
    run = _run(project, kind="http", spec={"url": "http://127.0.0.1:9/"})
    assert run.executions.get().outcome == "unreachable"


def test_http_parameters_cannot_choose_the_host(project):
    from django.core.exceptions import ValidationError

    task = TaskFactory.build(project=project, kind="http",
                             params_schema=[{"name": "h", "type": "string"}],
                             spec={"url": "http://{{ h }}/x"})
    with pytest.raises(ValidationError, match="only appear after the host"):
        task.full_clean()


def test_exit_codes_map_to_outcomes_and_changed_is_a_success(project):
    run = _run(project, spec={"argv": [PY, "-c", "import sys; sys.exit(2)"],
                              "exit_codes": {"2": "changed", "4": "unreachable"}})
    execution = run.executions.get()
    assert run.status == RunStatus.SUCCEEDED
    assert (execution.outcome, execution.exit_code) == ("changed", 2)


def test_an_unreachable_exit_code_retries_per_the_policy(project):
    run = _run(project, spec={"argv": [PY, "-c", "import sys; sys.exit(4)"],
                              "exit_codes": {"4": "unreachable"}},
               max_attempts=3, retry_on=["unreachable"], retry_backoff=[60])
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.PENDING
    assert Attempt.objects.get(execution=execution).outcome == "unreachable"
    assert "retry 2 of 3" in execution.waiting_reason


def test_files_are_rendered_into_the_working_directory(project):
    run = _run(
        project,
        spec={"argv": [PY, "-c", "import json; json.dump(open('inventory.ini').read(), "
                                 "open('result.json', 'w'))"],
              "files": {"inventory.ini": "[web]\n{{ host }} ansible_port={{ port }}\n"}},
        schema=[{"name": "host", "type": "string"}, {"name": "port", "type": "integer"}],
        params={"host": "web1", "port": 2222},
    )
    assert run.executions.get().result == "[web]\nweb1 ansible_port=2222\n"


def test_resource_limits_apply_to_the_command(project):
    script = (
        "import json, resource\n"
        "limits = {n: resource.getrlimit(getattr(resource, n))[0] for n in\n"
        "          ['RLIMIT_NOFILE', 'RLIMIT_FSIZE', 'RLIMIT_CPU', 'RLIMIT_AS']}\n"
        "try:\n"
        "    open('big', 'wb').write(b'x' * 3 * 1024 * 1024)\n"
        "    wrote = True\n"
        "except OSError:\n"
        "    wrote = False\n"
        "json.dump({'limits': limits, 'wrote_3mb': wrote}, open('result.json', 'w'))\n"
    )
    run = _run(project, spec={"argv": [PY, "-c", script],
                              "limits": {"open_files": 64, "file_size_mb": 2,
                                         "cpu_seconds": 30, "memory_mb": 2048}})
    result = run.executions.get().result
    assert result["limits"] == {"RLIMIT_NOFILE": 64, "RLIMIT_FSIZE": 2 * 1024 * 1024,
                                "RLIMIT_CPU": 30, "RLIMIT_AS": 2048 * 1024 * 1024}
    assert result["wrote_3mb"] is False


needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap is not installed (.ci/run installs it)")


@needs_bwrap
def test_bubblewrap_makes_the_root_read_only_and_cuts_the_network(project, http_server):
    import uuid

    from django.conf import settings

    # A path the worker itself could write.
    outside = settings.BASE_DIR / f"escape-{uuid.uuid4().hex}.txt"
    secret_key = settings.VAR_DIR / "secret_key"
    assert secret_key.exists()
    script = (
        "import json, sys, urllib.request\n"
        "res = {}\n"
        "try:\n"
        "    open(sys.argv[1], 'w').write('escaped'); res['outside'] = 'written'\n"
        "except OSError as e:\n"
        "    res['outside'] = type(e).__name__\n"
        "open('inside.txt', 'w').write('ok'); res['inside'] = 'written'\n"
        "try:\n"
        "    urllib.request.urlopen(sys.argv[2], timeout=3); res['net'] = 'reached'\n"
        "except OSError as e:\n"
        "    res['net'] = 'blocked'\n"
        "import os\n"
        "res['key_visible'] = os.path.exists(sys.argv[3])\n"
        "json.dump(res, open('result.json', 'w'))\n"
    )
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    run = _run(project, spec={"argv": [PY, "-c", script, str(outside), base, str(secret_key)],
                              "isolation": "bwrap"})
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    result = run.executions.get().result
    assert result["inside"] == "written"
    assert result["outside"] in ("OSError", "PermissionError", "FileNotFoundError")
    assert result["net"] == "blocked"
    assert result["key_visible"] is False  # var/ (secret key) is hidden in the sandbox
    assert not outside.exists()


def test_isolation_without_bwrap_fails_clearly(project, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    run = _run(project, spec={"argv": ["true"], "isolation": "bwrap"})
    assert "bubblewrap (bwrap) is not installed" in run.executions.get().error


@needs_bwrap
def test_bubblewrap_works_with_the_default_layout_workdirs_under_var(project, settings):
    # Production default: var/work inside var/, both hidden, the attempt's own dir visible.
    settings.SWITCHYARD_WORK_ROOT = settings.VAR_DIR / "work-sandbox-test"
    run = _run(project, spec={"argv": [PY, "-c", "import os, json; json.dump(os.listdir('.'),"
                                                 " open('result.json', 'w'))"],
                              "isolation": "bwrap"})
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert "params.json" in run.executions.get().result
