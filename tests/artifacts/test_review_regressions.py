"""Regressions found by the independent review: file names that broke pages or lost files,
dotfiles, deep or wide previews, the run badge after a retry, masked HTTP bodies, and the
sandbox hiding the artifact store."""

from __future__ import annotations

import sys

import pytest
from django.test import Client

from artifacts.models import Artifact
from artifacts.storage import keys_under
from runs.models import LogChunk
from runs.services import run_launch
from tests.artifacts.conftest import ACTOR, execute
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def _script_task(project, code, globs, slug="t", **kw):
    return TaskFactory(project=project, slug=slug,
                       spec={"argv": [sys.executable, "-c", code], **kw.pop("spec_extra", {})},
                       artifact_globs=globs, timeout_seconds=60,
                       params_schema=kw.pop("params_schema", []), **kw)


def _run(task, params=None):
    run, _ = run_launch(task=task, raw_params=params or {}, actor=ACTOR)
    return execute(run)


def _log(run):
    return "\n".join(LogChunk.objects.filter(execution__run=run).order_by("seq")
                     .values_list("text", flat=True))


def test_a_name_with_a_newline_is_refused_and_the_pages_still_work(project, personas):
    task = _script_task(project, "open('a\\nb.png','wb').write(b'x'); "
                        "open('ok.txt','w').write('hi')", ["*.png", "*.txt"])
    run = _run(task)
    assert list(Artifact.objects.filter(run=run).values_list("name", flat=True)) == ["ok.txt"]
    assert "is not kept: its name contains control characters" in _log(run)
    c = Client(raise_request_exception=False)
    c.force_login(personas["carol"])
    assert c.get(f"/runs/{run.pk}/artifacts").status_code == 200
    assert c.get(f"/runs/{run.pk}/").status_code == 200


@pytest.mark.parametrize(("create", "why"), [
    ("open(b'\\xff.txt','wb')", "its name is not valid UTF-8"),
    ("open('a\\\\x.txt','wb')", "its name contains a backslash"),
], ids=["non-utf8", "backslash"])
def test_a_bad_name_is_refused_and_the_other_files_are_kept(project, create, why):
    task = _script_task(project, f"{create}.write(b'x'); open('ok.txt','w').write('hi')",
                        ["*.txt"])
    run = _run(task)
    names = list(Artifact.objects.filter(run=run).values_list("name", flat=True))
    assert names == ["ok.txt"]
    assert f"is not kept: {why}" in _log(run)
    # Nothing stored that no row names.
    assert set(keys_under("")) == set(Artifact.objects.values_list("storage_key", flat=True))


def test_wildcards_do_not_keep_dotfiles_a_login_may_have_written(project):
    # HOME is the working directory; a tool that logs in writes credentials there.
    code = ("import os; os.makedirs('.docker', exist_ok=True); "
            "open('.docker/config.json','w').write(os.environ['SWITCHYARD_PARAM_TOKEN']); "
            "os.makedirs('out', exist_ok=True); open('out/report.txt','w').write('ok')")
    task = _script_task(project, code, ["**/*.json", "**/*.txt"],
                        params_schema=[{"name": "token", "type": "secret"}])
    run = _run(task, {"token": "s3cr3t-value"})
    names = list(Artifact.objects.filter(run=run).values_list("name", flat=True))
    print("kept", names)
    assert ".docker/config.json" not in names


def test_the_viewer_shows_json_nested_too_deep_to_format(project, personas):
    code = "open('deep.json','w').write('['*100000 + ']'*100000)"
    task = _script_task(project, code, ["*.json"])
    run = _run(task)
    a = Artifact.objects.get(run=run)
    c = Client(raise_request_exception=False)
    c.force_login(personas["carol"])
    r = c.get(f"/artifacts/{a.pk}/")
    print("viewer", r.status_code)
    assert r.status_code == 200


def test_a_wide_csv_row_does_not_blow_up_the_page(project, personas):
    # one wide row then many short ones: every row is padded to the widest
    code = "open('w.csv','w').write(','*20000 + '\\n' + 'a\\n'*1000)"
    task = _script_task(project, code, ["*.csv"])
    run = _run(task)
    a = Artifact.objects.get(run=run)
    c = Client(raise_request_exception=False)
    c.force_login(personas["carol"])
    import time
    t = time.time()
    r = c.get(f"/artifacts/{a.pk}/")
    print("viewer", r.status_code, "bytes", len(r.content), "secs", round(time.time() - t, 1))
    assert len(r.content) < 5_000_000


def test_a_failed_attempts_image_does_not_decide_the_run_badge(project):
    from artifacts.services import baseline_set
    code = ("import os, sys\nfrom PIL import Image\n"
            "bad = os.environ['SWITCHYARD_PARAM_MODE'] == 'later' and os.environ['SWITCHYARD_ATTEMPT'] == '1'\n"
            "Image.new('RGB', (20, 20), 'red' if bad else 'white').save('shot.png')\n"
            "sys.exit(1 if bad else 0)\n")
    task = _script_task(project, code, ["*.png"], max_attempts=2, retry_backoff=[0],
                        retry_on=["failure"],
                        params_schema=[{"name": "mode", "type": "string"}])
    base = _run(task, {"mode": "base"})
    baseline_set(base, actor=ACTOR)
    later = _run(task, {"mode": "later"})
    rows = list(Artifact.objects.filter(run=later).values_list("attempt", "comparison__level"))
    print("later", later.status, rows, "badge", later.visual_diff)
    assert later.visual_diff == "none"


def test_the_kept_http_response_has_secrets_masked(project):
    import http.server
    import threading

    from artifacts.storage import artifact_storage

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # echo the request headers back (as httpbin /headers does)
            body = ('{{"auth": "{}"}}'.format(self.headers["Authorization"])).encode()
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
        task = TaskFactory(project=project, kind="http",
                           params_schema=[{"name": "token", "type": "secret"}],
                           spec={"url": f"http://127.0.0.1:{server.server_port}/x",
                                 "headers": {"Authorization": "Bearer {{ token }}"}})
        run = _run(task, {"token": "TOPSECRET123"})
    finally:
        server.shutdown()
    ex = run.executions.get()
    print("result body:", ex.result["body"])
    print("log:", _log(run))
    a = Artifact.objects.get(run=run)
    stored = artifact_storage().open(a.storage_key).read()
    print("artifact:", stored)
    assert b"TOPSECRET123" not in stored


def test_an_isolated_task_cannot_read_the_artifact_store(project, settings, tmp_path):
    """ARTIFACTS_ROOT is often shared storage outside var/: bubblewrap hides it too."""
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    from django.core.files.storage import storages
    root = tmp_path / "shared-artifacts"
    settings.ARTIFACTS_ROOT = root
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(root), "base_url": None}}}
    storages._storages.pop("artifacts", None)
    other = root / "p999" / "r1" / "e1" / "a1"
    other.mkdir(parents=True)
    (other / "response.json").write_text('{"token": "OTHER-PROJECT-SECRET"}')
    code = (f"import glob; print([open(p).read() for p in glob.glob('{root}/**/*.json', "
            "recursive=True)])")
    task = _script_task(project, code, [], spec_extra={"isolation": "bwrap"})
    run = _run(task)
    print("LOG", _log(run))
    assert "OTHER-PROJECT-SECRET" not in _log(run)
