"""Collection after each attempt: globs, Switchyard's own files, symlinks out of the working
directory, caps with a visible note, fencing of a stale attempt, and the HTTP response body."""

from __future__ import annotations

import hashlib

import pytest

from artifacts.collect import artifacts_collect
from artifacts.models import Artifact
from artifacts.storage import artifact_storage
from runs.models import Event, LogChunk
from tests.artifacts.conftest import execute
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def _log(run) -> str:
    return "\n".join(LogChunk.objects.filter(execution__run=run).order_by("seq")
                     .values_list("text", flat=True))


def _stored(artifact: Artifact) -> bytes:
    with artifact_storage().open(artifact.storage_key, "rb") as handle:
        return handle.read()


def test_files_matching_the_globs_are_kept_with_size_hash_and_type(files_task, launch_files):
    task = files_task(["report.txt", "shots/**/*.png", "data/*.json"])
    run = launch_files(task, "report.txt=hello shots/a.png@10x10: shots/deep/er/b.png@4x3:red "
                             "data/x.json={} data/nested/y.json={} notes.md=skip other.png@2x2:")
    assert run.status == "succeeded"
    kept = {a.name: a for a in Artifact.objects.filter(run=run)}
    # ** spans directories, * does not; unmatched files are left alone.
    assert sorted(kept) == ["data/x.json", "report.txt", "shots/a.png", "shots/deep/er/b.png"]
    report = kept["report.txt"]
    assert report.size == 5
    assert report.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert report.content_type == "text/plain"
    assert _stored(report) == b"hello"
    image = kept["shots/deep/er/b.png"]
    assert (image.content_type, image.width, image.height) == ("image/png", 4, 3)
    assert kept["data/x.json"].content_type == "application/json"
    assert image.storage_key.startswith(
        f"p{run.project_id}/r{run.pk}/e{image.execution_id}/a1/")
    event = Event.objects.get(run=run, kind="artifacts.collected")
    assert event.data["bytes"] == sum(a.size for a in kept.values())


def test_artifacts_are_recorded_before_the_run_is_reported_finished(files_task, launch_files):
    # The execution finishes after collection: an execution that is terminal has its files.
    run = launch_files(files_task(["out.txt"]), "out.txt=x")
    collected = Event.objects.get(run=run, kind="artifacts.collected").seq
    finished = Event.objects.filter(run=run, kind="execution.succeeded").get().seq
    assert collected < finished


def test_switchyard_input_files_are_never_kept_even_when_a_glob_matches(project, launch_files,
                                                                        files_task):
    task = files_task(["*.json", "*.cfg"])
    task.spec = {**task.spec, "files": {"app.cfg": "password={{ files }}"}}
    task.save()
    run = launch_files(task, "mine.json={}")
    names = set(Artifact.objects.filter(run=run).values_list("name", flat=True))
    assert names == {"mine.json"}  # not params.json, input.json or the templated app.cfg
    assert "params.json is not kept: it is one of Switchyard's own input files" in _log(run)


def test_a_symlink_to_a_file_outside_the_working_directory_is_refused(files_task, launch_files):
    run = launch_files(files_task(["*.txt", "**/*.conf"]),
                       "passwd.txt->/etc/passwd ok.txt=fine etc->/etc")
    names = set(Artifact.objects.filter(run=run).values_list("name", flat=True))
    assert names == {"ok.txt"}
    log = _log(run)
    assert "passwd.txt is not kept: it is a symbolic link" in log
    assert "etc/ is not searched: it is a symbolic link" in log
    for artifact in Artifact.objects.filter(run=run):
        assert b"root:" not in _stored(artifact)


def test_a_symlink_pointing_inside_is_refused_too(files_task, launch_files):
    # Only regular files: a link is never followed, wherever it points.
    run = launch_files(files_task(["*.txt"]), "real.txt=a alias.txt->real.txt")
    assert set(Artifact.objects.filter(run=run).values_list("name", flat=True)) == {"real.txt"}


def test_the_per_file_cap_skips_the_file_with_a_note(files_task, launch_files, settings):
    settings.SWITCHYARD_ARTIFACT_MAX_FILE_MB = 1
    run = launch_files(files_task(["*.bin"]), f"big.bin~{2 * 1024 * 1024} small.bin~10")
    assert set(Artifact.objects.filter(run=run).values_list("name", flat=True)) == {"small.bin"}
    assert ("big.bin is not kept: 2.0 MB is over the per-file cap of 1 MB "
            "(SWITCHYARD_ARTIFACT_MAX_FILE_MB)") in _log(run)
    event = Event.objects.get(run=run, kind="artifacts.collected")
    assert "1 not kept" in event.message
    assert any("per-file cap" in n for n in event.data["notes"])
    assert run.status == "succeeded"  # a note, not a failure


def test_the_per_run_cap_counts_what_earlier_files_took(files_task, launch_files, settings):
    settings.SWITCHYARD_ARTIFACT_MAX_RUN_MB = 1
    half = 600 * 1024
    run = launch_files(files_task(["*.bin"]), f"a.bin~{half} b.bin~{half} c.bin~10")
    assert set(Artifact.objects.filter(run=run).values_list("name", flat=True)) == {
        "a.bin", "c.bin"}
    assert "b.bin is not kept: the run's artifacts would exceed the per-run cap of 1 MB" \
        in _log(run)


def test_the_file_count_cap(files_task, launch_files, settings):
    settings.SWITCHYARD_ARTIFACT_MAX_FILES = 2
    run = launch_files(files_task(["*.txt"]), "a.txt=1 b.txt=2 c.txt=3 d.txt=4")
    assert Artifact.objects.filter(run=run).count() == 2
    assert "2 more matching files are not kept: at most 2 files per attempt" in _log(run)


def test_a_stale_attempt_records_nothing_and_its_files_are_removed(project, tmp_path):
    from runs.services import run_launch
    from runs.transitions import Actor, execution_claim, execution_queue

    task = TaskFactory(project=project, spec={"argv": ["true"]}, params_schema=[],
                       artifact_globs=["*.txt"])
    run, _ = run_launch(task=task, raw_params={}, actor=Actor(via="api", label="t"))
    execution = run.executions.get()
    execution_queue(execution_id=execution.pk)
    execution_claim(execution_id=execution.pk, worker="w:1")
    workdir = tmp_path / "wd"
    workdir.mkdir()
    (workdir / "late.txt").write_text("from a worker that lost its lease")
    execution.refresh_from_db()
    # The reaper moved the execution on to attempt 2: attempt 1 is stale.
    type(execution).objects.filter(pk=execution.pk).update(attempt=2)
    report = artifacts_collect(execution=execution, attempt=1, workdir=workdir,
                               globs=["*.txt"])
    assert report.fenced and not report.kept
    assert not Artifact.objects.exists()
    storage = artifact_storage()
    prefix = f"p{run.project_id}/r{run.pk}/e{execution.pk}/a1"
    assert not storage.exists(f"{prefix}/late.txt")


def test_a_failed_attempt_keeps_its_files_too(project, launch_files):
    import sys

    task = TaskFactory(project=project, params_schema=[], artifact_globs=["trace.log"],
                       spec={"argv": [sys.executable, "-c",
                                      "open('trace.log','w').write('why it failed');"
                                      "raise SystemExit(2)"]})
    from runs.services import run_launch
    from runs.transitions import Actor

    run = execute(run_launch(task=task, raw_params={}, actor=Actor(via="api", label="t"))[0])
    assert run.status == "failed"
    assert Artifact.objects.get(run=run).name == "trace.log"


def test_the_http_response_body_is_kept_as_an_artifact(project):
    import http.server
    import threading

    from runs.services import run_launch
    from runs.transitions import Actor

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  http.server's naming
            body = b'{"items": [' + b",".join(b"%d" % i for i in range(20000)) + b"]}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        task = TaskFactory(project=project, kind="http", params_schema=[],
                           spec={"url": f"http://127.0.0.1:{server.server_port}/items"})
        run = execute(run_launch(task=task, raw_params={}, actor=Actor(via="api", label="t"))[0])
    finally:
        server.shutdown()
    assert run.status == "succeeded"
    artifact = Artifact.objects.get(run=run)
    assert (artifact.name, artifact.content_type) == ("response.json", "application/json")
    body = _stored(artifact)
    assert body.endswith(b"19999]}") and artifact.size == len(body) > 64 * 1024
