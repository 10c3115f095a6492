"""Browser: a baseline comparison in the artifact viewer. Two real Chromium screenshots of the
demo's pricing page (as designed, then with a sale banner), the second compared with the
first; the slider and heatmap modes (and the others) render and respond. Screenshots go to
docs/screenshots with SWITCHYARD_SCREENSHOTS=1 (see tests/browser/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

from artifacts.models import Artifact
from artifacts.services import baseline_set
from runs.demo import CAPTURE_SCRIPT
from runs.services import run_launch
from tests.artifacts.conftest import ACTOR, execute
from tests.factories import TaskFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="the demo page needs chromium"),
]


def _loaded(page, selector: str) -> bool:
    return page.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0")


def test_the_slider_and_heatmap_render_a_baseline_comparison(pages, shot, project, personas):
    from playwright.sync_api import expect

    task = TaskFactory(
        project=project, slug="pricing-shot", name="Pricing page screenshot",
        params_schema=[{"name": "change", "type": "choice",
                        "choices": ["none", "tweak", "banner"], "default": "none"}],
        spec={"argv": ["python3", "-c", CAPTURE_SCRIPT, "pricing", "desktop", "{{ change }}"]},
        artifact_globs=["shots/*.png"], timeout_seconds=120)
    baseline = execute(run_launch(task=task, raw_params={"change": "none"}, actor=ACTOR)[0])
    assert baseline.status == "succeeded"
    baseline.refresh_from_db()
    baseline_set(baseline, actor=ACTOR)
    changed = execute(run_launch(task=task, raw_params={"change": "banner"}, actor=ACTOR)[0])
    shot_artifact = Artifact.objects.get(run=changed, name="shots/pricing-desktop.png")
    assert shot_artifact.comparison.level == "major"

    page = pages.logged_in("carol", width=1280, height=1000)
    page.goto(f"/artifacts/{shot_artifact.pk}/")
    stage = page.locator("#compare-stage")
    expect(page.get_by_role("tab", name="Slider")).to_have_attribute("aria-selected", "true")
    expect(stage).to_have_attribute("data-mode", "slider")
    expect(page.locator(".layer-observed")).to_be_visible()
    expect(page.locator(".layer-baseline")).to_be_visible()
    page.wait_for_function("[...document.querySelectorAll('#compare-stage img.layer-observed, "
                           "#compare-stage img.layer-baseline')].every(i => i.complete && "
                           "i.naturalWidth > 0)")
    # Moving the divider moves the clip of the baseline layer.
    page.locator("#slider-pos").evaluate(
        "el => { el.value = 30; el.dispatchEvent(new Event('input')); }")
    assert stage.evaluate("el => el.style.getPropertyValue('--pos')") == "30%"
    clip = page.locator(".layer-baseline").evaluate("el => getComputedStyle(el).clipPath")
    assert clip.startswith("inset(") and "70%" in clip
    expect(page.get_by_text("Divider")).to_be_visible()
    shot(page, "artifact-compare-slider")

    page.get_by_role("tab", name="Heatmap").click()
    expect(stage).to_have_attribute("data-mode", "heatmap")
    expect(page.locator(".layer-heatmap")).to_be_visible()
    expect(page.locator(".layer-observed")).to_be_hidden()
    page.wait_for_function("document.querySelector('.layer-heatmap').naturalWidth > 0")
    assert _loaded(page, ".layer-heatmap")
    expect(page.get_by_text("Dark blue: unchanged")).to_be_visible()
    shot(page, "artifact-compare-heatmap")

    page.get_by_role("tab", name="Diff").click()
    expect(page.locator(".layer-diff")).to_be_visible()
    page.get_by_role("tab", name="Onion skin").click()
    page.locator("#onion-opacity").evaluate(
        "el => { el.value = 80; el.dispatchEvent(new Event('input')); }")
    opacity = page.locator(".layer-observed").evaluate("el => getComputedStyle(el).opacity")
    assert float(opacity) == pytest.approx(0.8)
    # Arrow keys move between the tabs, as the tabs pattern expects.
    page.get_by_role("tab", name="Onion skin").focus()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("tab", name="Slider")).to_be_focused()
    expect(stage).to_have_attribute("data-mode", "slider")

    # The run page lists the file with its badge.
    page.goto(f"/runs/{changed.pk}/")
    expect(page.locator("#run-artifacts")).to_contain_text("major visual change")
