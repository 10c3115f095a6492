"""The command executor with real subprocesses and signals."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.tasks import execution_run
from runs.models import Attempt, ExecutionStatus, LogChunk, RunStatus
from tests.conftest import process_alive as _alive
from tests.conftest import wait_for
from tests.jobs.conftest import log_text

PY = sys.executable

ARGV_TO_RESULT = (
    "import json, sys; json.dump(sys.argv[1:], open('result.json', 'w'))"
)

HOSTILE = ["; rm -rf /tmp/x", "$(id)", "`id`", "a\nb", "--help", "' \" \\ *", "&& echo pwned |"]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_parameter_reaches_the_program_as_one_literal_argument(run_command, value):
    run = run_command(
        [PY, "-c", ARGV_TO_RESULT, "{{ value }}", "prefix-{{ value }}"],
        params={"value": value},
        # Opting in to leading dashes: this test is about one literal argument each.
        schema=[{"name": "value", "type": "text", "allow_leading_dash": True}],
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.executions.get().result == [value, f"prefix-{value}"]


def test_parameters_arrive_as_environment_variables_and_a_json_file(run_command):
    script = (
        "import json, os\n"
        "params = json.load(open(os.environ['SWITCHYARD_PARAMS_FILE']))\n"
        "json.dump({'file': params, 'env': os.environ['SWITCHYARD_PARAM_COUNT'],\n"
        "           'flag': os.environ['SWITCHYARD_PARAM_FLAG'],\n"
        "           'leak': os.environ.get('DATABASE_URL'), 'home': os.environ['HOME'],\n"
        "           'cwd': os.getcwd()}, open('result.json', 'w'))\n"
    )
    os.environ["SWITCHYARD_TEST_SHOULD_NOT_LEAK"] = "1"
    try:
        run = run_command(
            [PY, "-c", script],
            params={"count": 3, "flag": True},
            schema=[{"name": "count", "type": "integer"}, {"name": "flag", "type": "boolean"}],
        )
    finally:
        del os.environ["SWITCHYARD_TEST_SHOULD_NOT_LEAK"]
    result = run.executions.get().result
    assert result["file"] == {"count": 3, "flag": True}
    assert result["env"] == "3"
    assert result["flag"] == "true"
    assert result["leak"] is None  # the worker's environment is scrubbed
    assert result["cwd"] == result["home"]


def test_each_attempt_gets_a_fresh_working_directory_that_is_removed(run_command, settings):
    run = run_command([PY, "-c", "import os, json; json.dump(os.listdir('.'), "
                       "open('result.json', 'w'))"])
    assert sorted(run.executions.get().result) == ["input.json", "params.json"]
    assert list(Path(settings.SWITCHYARD_WORK_ROOT).iterdir()) == []


def test_a_non_zero_exit_fails_with_the_code_and_the_last_stderr_lines(run_command):
    script = (
        "import sys\n"
        "print('to stdout')\n"
        "for i in range(30): print(f'err line {i}', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    run = run_command([PY, "-c", script])
    execution = run.executions.get()
    assert run.status == RunStatus.FAILED
    assert execution.status == ExecutionStatus.FAILED
    assert execution.exit_code == 3
    assert execution.error.startswith("Exited with code 3")
    assert "err line 29" in execution.error
    assert "err line 0\n" not in execution.error  # only the tail is kept
    assert "exited with code 3" in run.status_reason.lower()
    assert "to stdout" in log_text(run, "stdout")
    assert "err line 5" in log_text(run, "stderr")


def test_a_missing_program_fails_with_a_clear_error(run_command):
    run = run_command(["/nonexistent/program"])
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.FAILED
    assert "Could not start '/nonexistent/program'" in execution.error




def test_a_timeout_kills_the_process_group_including_a_grandchild(run_command, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
        "print('spawned', child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    run = run_command([PY, "-c", script, "{{ pidfile }}"], params={"pidfile": str(pidfile)},
                      schema=[{"name": "pidfile", "type": "string"}], timeout=2)
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.TIMED_OUT
    assert run.status == RunStatus.TIMED_OUT
    assert "Timed out after 2 s" in execution.error
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not _alive(grandchild), timeout=10, message="the grandchild to die")
    assert "timed out after 2 s" in log_text(run, "system")


def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_grace(run_command, settings):
    settings.SWITCHYARD_KILL_GRACE = 0.5
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(300)\n"
    )
    run = run_command([PY, "-c", script], timeout=1)
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.TIMED_OUT
    assert execution.exit_code == -9
    assert "sent SIGKILL" in log_text(run, "system")


def test_background_processes_left_behind_are_killed_when_the_command_exits(
    run_command, tmp_path
):
    pidfile = tmp_path / "bg.pid"
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen(['sleep', '300'], stdout=subprocess.DEVNULL,\n"
        "                         stderr=subprocess.DEVNULL)\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
    )
    run = run_command([PY, "-c", script, str(pidfile)])
    assert run.status == RunStatus.SUCCEEDED
    wait_for(lambda: not _alive(int(pidfile.read_text())), timeout=10,
             message="the background process to die")


def test_result_json_becomes_the_result_and_bad_json_is_reported(run_command):
    good = run_command([PY, "-c", "import json; json.dump({'changed': 2}, open('result.json',"
                        " 'w'))"])
    assert good.executions.get().result == {"changed": 2}
    bad = run_command([PY, "-c", "open('result.json', 'w').write('{not json')"])
    assert bad.status == RunStatus.SUCCEEDED
    assert bad.executions.get().result is None
    assert "result.json ignored: not valid JSON" in log_text(bad, "system")


def test_output_is_stored_in_batches_not_one_insert_per_line(run_command, settings):
    settings.SWITCHYARD_LOG_BATCH_LINES = 500
    settings.SWITCHYARD_LOG_BATCH_SECONDS = 5.0
    with CaptureQueriesContext(connection) as queries:
        run = run_command([PY, "-c", "for i in range(5000): print(f'line {i}')"])
    inserts = [q for q in queries.captured_queries if 'INSERT INTO "runs_logchunk"' in q["sql"]]
    chunks = LogChunk.objects.filter(execution__run=run, stream="stdout")
    lines = "\n".join(c.text for c in chunks.order_by("seq")).split("\n")
    assert lines == [f"line {i}" for i in range(5000)]
    assert sum(c.line_count for c in chunks) == 5000
    assert len(inserts) <= 15  # ~10 batches of 500 plus notices, not 5000


def test_the_log_is_capped_with_a_visible_notice(run_command, settings):
    settings.SWITCHYARD_LOG_MAX_BYTES = 2048
    run = run_command([PY, "-c", "for i in range(2000): print('x' * 50)"])
    text = log_text(run)
    assert "log truncated" in text
    assert len(log_text(run, "stdout")) <= 2048
    assert run.status == RunStatus.SUCCEEDED


def test_the_same_q2_task_delivered_twice_runs_the_command_once(project, tmp_path):
    from jobs.tasks import execution_run
    from runs.services import run_launch
    from runs.transitions import Actor, execution_queue
    from tests.factories import TaskFactory

    marker = tmp_path / "ran.txt"
    task = TaskFactory(project=project, params_schema=[],
                       spec={"argv": [PY, "-c", f"open({str(marker)!r}, 'a').write('ran\\n')"]})
    run, _ = run_launch(task=task, raw_params={}, actor=Actor(via="api", label="t"))
    execution = run.executions.get()
    execution_queue(execution_id=execution.pk)
    first = execution_run(execution.pk)
    second = execution_run(execution.pk)
    assert "succeeded" in first
    assert "nothing to do" in second
    assert marker.read_text() == "ran\n"
    assert Attempt.objects.filter(execution=execution).count() == 1


def test_secret_parameters_are_masked_in_logs_and_never_stored_in_clear(run_command):
    run = run_command(
        [PY, "-c", "import os; print('token is', os.environ['SWITCHYARD_PARAM_TOKEN'])"],
        params={"token": "hunter2-very-secret"},
        schema=[{"name": "token", "type": "secret"}],
    )
    assert run.status == RunStatus.SUCCEEDED
    assert "hunter2-very-secret" not in log_text(run)
    assert "token is ********" in log_text(run)
    assert run.params == {"token": "********"}
    assert "hunter2" not in json.dumps(list(run.events.values("message", "data")), default=str)
    assert "hunter2" not in run.secret_params


def test_a_timeout_holds_after_the_command_closes_its_output(run_command):
    run = run_command(["sh", "-c", "exec >/dev/null 2>&1; sleep 30"], timeout=1)
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.TIMED_OUT


def test_a_nul_byte_in_the_output_is_stored_and_the_command_still_ends(run_command):
    run = run_command(["sh", "-c", "printf 'a\\0b\\n'; echo done"])
    assert run.status == RunStatus.SUCCEEDED
    text = log_text(run, "stdout")
    assert "a\ufffdb" in text and "done" in text


def test_a_result_with_nan_is_dropped_with_a_note(run_command):
    run = run_command([PY, "-c", "open('result.json', 'w').write('{\"x\": NaN}')"])
    execution = run.executions.get()
    assert run.status == RunStatus.SUCCEEDED
    assert execution.result is None
    assert "NaN" in log_text(run, "system") or "NaN" in execution.error


def test_a_value_that_would_be_read_as_an_option_is_refused(api_for, project):
    from tests.factories import TaskFactory

    TaskFactory(project=project, slug="ping", spec={"argv": ["ssh", "{{ node }}", "uptime"]},
                params_schema=[{"name": "node", "type": "string"}])
    response = api_for("bob").post("/api/projects/demo/tasks/ping/runs",
                                   {"params": {"node": "-oProxyCommand=touch /tmp/pwned"}})
    assert response.status_code == 422
    assert "would read it as an option" in response.json()["error"]["fields"]["node"][0]


def test_a_pipeline_step_cannot_smuggle_an_option_either(project):
    from jobs.dispatch import dispatch
    from runs.services import run_launch
    from runs.transitions import Actor
    from tests.factories import TaskFactory

    TaskFactory(project=project, slug="ping", spec={"argv": ["echo", "{{ node }}"]},
                params_schema=[{"name": "node", "type": "string"}])
    pipeline = TaskFactory(
        project=project, kind="pipeline", params_schema=[{"name": "n", "type": "string"}],
        spec={"stages": [{"name": "s", "steps": [
            {"name": "p", "task": "ping", "params": {"node": "{{ n }}"}}]}]})
    run, _ = run_launch(task=pipeline, raw_params={"n": "--evil"},
                        actor=Actor(via="api", label="t"))
    dispatch()
    execution_run(run.executions.get().pk)
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.FAILED
    assert "would read it as an option" in execution.error


def test_secret_parameters_cannot_be_used_in_arguments_keys_or_urls(project):
    from django.core.exceptions import ValidationError

    from tests.factories import TaskFactory

    schema = [{"name": "token", "type": "secret"}]
    for fields in ({"spec": {"argv": ["curl", "{{ token }}"]}},
                   {"spec": {"argv": ["true"]}, "concurrency_key": "k:{{ token }}"},
                   {"kind": "http", "spec": {"url": "http://h/x?k={{ token }}"}}):
        task = TaskFactory.build(project=project, params_schema=schema, **fields)
        with pytest.raises(ValidationError, match="cannot use the secret parameter"):
            task.full_clean()
