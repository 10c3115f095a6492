"""Structured logs: with LOG_FORMAT=json each record is one JSON object, and records written
while an attempt runs (its own code, a python callable's thread) carry its run and execution."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from config.logging import ContextFilter, PlainFormatter, log_context
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def captured():
    from pythonjsonlogger.json import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s %(run_id)s "
                                       "%(execution_id)s"))
    logger = logging.getLogger("switchyard.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_inside_an_attempt_carry_its_ids(captured):
    logger, stream = captured
    with log_context(run_id=41, execution_id=97):
        logger.info("inside")
    logger.info("outside")
    inside, outside = _lines(stream)
    assert (inside["message"], inside["run_id"], inside["execution_id"]) == ("inside", 41, 97)
    assert (outside["run_id"], outside["execution_id"]) == (None, None)


@pytest.mark.django_db
def test_a_python_callables_log_records_name_its_run(captured, project):
    from jobs.callables import switchyard_callable
    from tests.jobs.test_task_kinds import _run

    logger, stream = captured

    @switchyard_callable("test_logs")
    def logs(ctx, **params):
        logger.warning("from the callable's thread")
        return {}

    run = _run(project, kind="python", spec={"callable": "test_logs"})
    record = next(r for r in _lines(stream) if r["message"] == "from the callable's thread")
    assert record["run_id"] == run.pk
    assert record["execution_id"] == run.executions.get().pk


def test_the_plain_format_appends_the_ids():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.run_id, record.execution_id = 5, 6
    assert PlainFormatter("%(message)s").format(record) == "hello [run_id=5 execution_id=6]"


def test_log_format_json_is_what_the_settings_configure():
    code = ("import django, logging; django.setup(); "
            "from config.logging import log_context\n"
            "with log_context(run_id=3, execution_id=4):\n"
            "    logging.getLogger('jobs.tasks').warning('configured')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,  # noqa: S603
                          text=True, timeout=60,
                          env=subprocess_env(LOG_FORMAT="json",
                                             DJANGO_SETTINGS_MODULE="config.settings"))
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "jobs.tasks",
                                                                "configured")
    assert (line["run_id"], line["execution_id"]) == (3, 4)
    bad = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,  # noqa: S603
                         capture_output=True, text=True, timeout=60,
                         env=subprocess_env(LOG_FORMAT="xml",
                                            DJANGO_SETTINGS_MODULE="config.settings"))
    assert bad.returncode != 0 and "LOG_FORMAT must be 'plain' or 'json'" in bad.stderr
