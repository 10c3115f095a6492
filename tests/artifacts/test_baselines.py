"""Baselines end to end: a run marked as its task's baseline, a later run whose image differs,
the comparison stored with its pictures, badges on the pages, and the controls by role."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from PIL import Image

from artifacts.models import Artifact, Comparison
from artifacts.services import baseline_set, run_compare
from runs.models import AuditLog, Event, Task
from tests.artifacts.conftest import ACTOR

pytestmark = pytest.mark.django_db


@pytest.fixture
def shots(files_task, launch_files, personas):
    task = files_task(["*.png"], slug="shots")
    baseline = launch_files(task, "home.png@100x100: logo.png@10x10:")
    baseline_set(baseline, actor=ACTOR)
    later = launch_files(task, "home.png@100x100:+10,10,10,10 logo.png@10x10: extra.png@5x5:")
    return task, baseline, later


def _client(personas, name: str) -> Client:
    client = Client()
    client.force_login(personas[name])
    return client


def test_a_later_run_is_compared_with_the_baseline_image_of_the_same_name(shots):
    task, baseline, later = shots
    comparisons = {c.artifact.name: c for c in Comparison.objects.filter(artifact__run=later)
                   .select_related("artifact", "baseline")}
    home = comparisons["home.png"]
    assert home.ratio == pytest.approx(0.01) and home.level == "major"
    assert home.baseline.run_id == baseline.pk and home.baseline_run_id == baseline.pk
    assert comparisons["logo.png"].level == "none"
    # A new image has no counterpart: recorded, not an error, and without a level.
    assert comparisons["extra.png"].level == ""
    assert "the baseline run has no image 'extra.png'" in comparisons["extra.png"].note
    later.refresh_from_db()
    assert later.visual_diff == "major"
    # The pictures are stored PNGs.
    from artifacts.storage import artifact_storage

    with artifact_storage().open(home.diff_key) as handle:
        assert Image.open(io.BytesIO(handle.read())).size == (100, 100)


def test_thresholds_on_the_task_decide_the_level(shots, files_task, launch_files):
    task, _, later = shots
    Task.objects.filter(pk=task.pk).update(diff_major_ratio=0.5)
    run_compare(later, actor=ACTOR)
    later.refresh_from_db()
    assert later.visual_diff == "minor"
    assert Comparison.objects.get(artifact__run=later, artifact__name="home.png").level == "minor"


def test_matrix_cells_are_compared_cell_by_cell(project):
    import sys

    from runs.services import run_launch
    from tests.artifacts.conftest import WRITER, execute
    from tests.factories import TaskFactory

    pipeline = TaskFactory(
        project=project, kind="pipeline", params_schema=[
            {"name": "shade", "type": "string", "default": "white"}],
        artifact_globs=["shot.png"],
        spec={"stages": [{"name": "capture", "matrix": {"page": ["a", "b"]}, "steps": [
            {"name": "shot", "command": [sys.executable, "-c", WRITER,
                                         "shot.png@20x20:{{ shade }}"]}]}]})
    first = execute(run_launch(task=pipeline, raw_params={}, actor=ACTOR)[0])
    assert first.status == "succeeded"
    assert Artifact.objects.filter(run=first).count() == 2
    baseline_set(first, actor=ACTOR)
    second = execute(run_launch(task=pipeline, raw_params={"shade": "black"}, actor=ACTOR)[0])
    comparisons = Comparison.objects.filter(artifact__run=second).select_related(
        "artifact__execution", "baseline__execution")
    assert len(comparisons) == 2
    for comparison in comparisons:
        assert comparison.ratio == 1.0
        assert comparison.artifact.execution.matrix == comparison.baseline.execution.matrix


def test_only_a_finished_run_can_be_the_baseline(project, hello_task):
    from runs.errors import Conflict
    from runs.services import run_launch

    run, _ = run_launch(task=hello_task, raw_params={"name": "x"}, actor=ACTOR)
    with pytest.raises(Conflict, match="only a finished run can be the baseline"):
        baseline_set(run, actor=ACTOR)


def test_marking_a_baseline_is_audited_and_on_the_timeline(shots):
    task, baseline, _ = shots
    assert Event.objects.filter(run=baseline, kind="run.baseline").exists()
    assert AuditLog.objects.filter(action="task.baseline", object_id=str(task.pk)).exists()


def test_the_run_page_shows_badges_files_and_the_controls_by_role(shots, personas):
    task, baseline, later = shots
    page = _client(personas, "bob").get(f"/runs/{later.pk}/")
    html = page.content.decode()
    assert "major visual change" in html
    assert "home.png" in html and "Mark as baseline" in html
    assert "Compare with the baseline" in html
    assert "Delete run" not in html  # bob is an operator
    viewer = _client(personas, "carol").get(f"/runs/{later.pk}/").content.decode()
    assert "home.png" in viewer
    for control in ("Mark as baseline", "Compare with the baseline", "Delete run"):
        assert control not in viewer
    maintainer = _client(personas, "alice").get(f"/runs/{later.pk}/").content.decode()
    assert "Delete run" in maintainer
    base_page = _client(personas, "alice").get(f"/runs/{baseline.pk}/").content.decode()
    assert "Baseline of this task" in base_page and "Clear baseline" in base_page
    assert "Delete run" not in base_page  # a baseline cannot be deleted
    listing = _client(personas, "carol").get("/runs/").content.decode()
    assert "major visual change" in listing


def test_marking_a_baseline_from_the_page(shots, personas):
    task, baseline, later = shots
    response = _client(personas, "bob").post(f"/runs/{later.pk}/baseline")
    assert response.status_code == 303
    task.refresh_from_db()
    assert task.baseline_run_id == later.pk
    assert _client(personas, "carol").post(f"/runs/{baseline.pk}/baseline").status_code == 403
    assert _client(personas, "mallory").post(f"/runs/{baseline.pk}/baseline").status_code == 404
    assert _client(personas, "bob").get(f"/runs/{baseline.pk}/baseline").status_code == 405


def test_the_viewer_offers_every_comparison_mode(shots, personas):
    _, _, later = shots
    home = Artifact.objects.get(run=later, name="home.png")
    html = _client(personas, "carol").get(f"/artifacts/{home.pk}/").content.decode()
    for mode in ("observed", "baseline", "diff", "heatmap", "slider", "onion"):
        assert f'data-mode="{mode}"' in html
    assert "100 of 10000 pixels differ (1.0%)" in html
    client = _client(personas, "carol")
    for picture in ("diff", "heatmap", "baseline"):
        response = client.get(f"/artifacts/{home.pk}/compare/{picture}.png")
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response["Content-Disposition"].startswith("inline")
        assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert _client(personas, "mallory").get(
        f"/artifacts/{home.pk}/compare/diff.png").status_code == 404
    logo = Artifact.objects.get(run=later, name="extra.png")
    assert client.get(f"/artifacts/{logo.pk}/compare/diff.png").status_code == 404
