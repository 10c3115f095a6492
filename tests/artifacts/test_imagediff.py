"""Image comparison on known images: exact ratios, levels from the thresholds, size changes,
tolerance, and unreadable input."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from artifacts.imagediff import NotComparable, diff_level, image_diff
from tests.artifacts.conftest import png


def test_a_10x10_box_on_100x100_is_one_percent():
    result = image_diff(png(box=(10, 10, 10, 10)), png())
    assert result.differing_pixels == 100
    assert result.ratio == pytest.approx(0.01)
    assert (result.width, result.height, result.note) == (100, 100, "")


def test_identical_images_do_not_differ():
    result = image_diff(png(box=(5, 5, 3, 3)), png(box=(5, 5, 3, 3)))
    assert result.ratio == 0 and result.differing_pixels == 0
    assert diff_level(result.ratio, minor=0, major=0) == "none"


@pytest.mark.parametrize(("ratio", "level"), [
    (0.0, "none"), (0.00009, "none"), (0.0001, "minor"), (0.0099, "minor"), (0.01, "major"),
    (1.0, "major"),
])
def test_levels_follow_the_thresholds(ratio, level):
    assert diff_level(ratio, minor=0.0001, major=0.01) == level


def test_the_two_known_images_give_the_expected_level():
    # 2 x 2 = 4 pixels of 10 000 differ: 0.04 %, minor with the default thresholds.
    result = image_diff(png(box=(50, 50, 2, 2)), png())
    assert result.ratio == pytest.approx(0.0004)
    assert diff_level(result.ratio, minor=0.0001, major=0.01) == "minor"
    big = image_diff(png(box=(0, 0, 50, 50)), png())
    assert big.ratio == pytest.approx(0.25)
    assert diff_level(big.ratio, minor=0.0001, major=0.01) == "major"


def test_a_size_change_counts_the_missing_area_as_different():
    result = image_diff(png(size=(100, 120)), png(size=(100, 100)))
    assert (result.width, result.height) == (100, 120)
    assert result.differing_pixels == 100 * 20
    assert "sizes differ: observed 100×120, baseline 100×100" in result.note


def test_tolerance_ignores_small_channel_differences():
    a, b = png(color=(200, 200, 200)), png(color=(205, 200, 200))
    assert image_diff(a, b, tolerance=0).ratio == 1.0
    assert image_diff(a, b, tolerance=5).ratio == 0.0


def test_the_diff_marks_differing_pixels_in_magenta_and_the_heatmap_is_hot_there():
    result = image_diff(png(box=(10, 10, 10, 10)), png())
    diff = Image.open(io.BytesIO(result.diff_png)).convert("RGB")
    assert diff.getpixel((15, 15)) == (230, 0, 170)
    assert diff.getpixel((80, 80)) != (230, 0, 170)
    heat = Image.open(io.BytesIO(result.heatmap_png)).convert("RGB")
    hot, cold = heat.getpixel((15, 15)), heat.getpixel((80, 80))
    assert hot[0] > 200 and cold == (12, 16, 64)


def test_unreadable_or_oversized_input_is_not_comparable():
    with pytest.raises(NotComparable, match="not a readable image"):
        image_diff(b"not an image", png())
    with pytest.raises(NotComparable, match="more than the 100 compared"):
        image_diff(png(size=(20, 20)), png(), max_pixels=100)
