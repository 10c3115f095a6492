"""Image comparison with Pillow: the share of pixels that differ, a diff picture and a heatmap.

Both images are laid on a canvas the size of the larger one; where one image has no pixel the
other's pixel counts as different, so a page that grew by 40 rows is a difference, not an
error. A pixel differs when some channel (R, G, B or alpha) differs by more than `tolerance`.

- diff: the observed image in faded grey, with every differing pixel in solid magenta, so
  small changes stand out on any background;
- heatmap: the per-pixel difference, blurred so that small clusters stay visible at a glance,
  coloured from dark blue (none) through yellow to red (largest).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageFilter, ImageOps, UnidentifiedImageError

from artifacts.models import DiffLevel


class NotComparable(Exception):
    """The bytes are not an image Pillow can read, or are too large to compare."""


@dataclass
class ImageDiff:
    ratio: float  # differing pixels / canvas pixels, 0.0 to 1.0
    differing_pixels: int
    width: int
    height: int
    note: str
    diff_png: bytes
    heatmap_png: bytes


def diff_level(ratio: float, *, minor: float, major: float) -> str:
    """none below `minor`, minor below `major`, major from `major` on. A ratio of exactly
    zero is always none, even with thresholds of zero."""
    if ratio <= 0 or ratio < minor:
        return DiffLevel.NONE
    if ratio < major:
        return DiffLevel.MINOR
    return DiffLevel.MAJOR


def _load(data: bytes, max_pixels: int, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise NotComparable(f"the {what} image is {width}×{height} pixels, more than the "
                                f"{max_pixels:,} compared (SWITCHYARD_DIFF_MAX_PIXELS)")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise NotComparable(f"the {what} file is not a readable image ({exc})") from None
    return image.convert("RGBA")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def image_diff(observed: bytes, baseline: bytes, *, tolerance: int = 0,
               max_pixels: int = 40_000_000) -> ImageDiff:
    """Compare two encoded images (PNG, JPEG, ...). Raises NotComparable for unreadable ones."""
    new = _load(observed, max_pixels, "observed")
    old = _load(baseline, max_pixels, "baseline")
    width, height = max(new.width, old.width), max(new.height, old.height)
    if width * height > max_pixels:
        # Each image may be under the cap while the canvas holding both is not (a tall one
        # against a wide one): the canvas is what costs memory.
        raise NotComparable(f"comparing them needs a {width}×{height} canvas, more than the "
                            f"{max_pixels:,} pixels compared (SWITCHYARD_DIFF_MAX_PIXELS)")
    note = ""
    if new.size != old.size:
        note = (f"sizes differ: observed {new.width}×{new.height}, baseline "
                f"{old.width}×{old.height}; the area outside either counts as different")
    # Transparent canvases: the missing area of the smaller image differs from any drawn
    # pixel of the larger one through the alpha channel at least.
    a = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    a.paste(new, (0, 0))
    b = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    b.paste(old, (0, 0))
    if new.size != old.size:
        # Mark the area one image lacks as maximally different even when the other image is
        # transparent black there too.
        outside = Image.new("L", (width, height), 255)
        overlap = Image.new("L", (min(new.width, old.width), min(new.height, old.height)), 0)
        outside.paste(overlap, (0, 0))
    else:
        outside = None
    delta = ImageChops.difference(a, b).split()
    per_pixel = delta[0]
    for channel in delta[1:]:
        per_pixel = ImageChops.lighter(per_pixel, channel)  # the largest channel difference
    if outside is not None:
        per_pixel = ImageChops.lighter(per_pixel, outside)
    mask = per_pixel.point(lambda v: 255 if v > tolerance else 0, mode="L")
    differing = mask.histogram()[255]
    ratio = differing / float(width * height)

    grey = ImageOps.grayscale(a.convert("RGB"))
    faded = Image.blend(grey, Image.new("L", grey.size, 255), 0.65).convert("RGB")
    magenta = Image.new("RGB", faded.size, (230, 0, 170))
    diff = Image.composite(magenta, faded, mask)

    # Spread and amplify so that a few changed pixels still read as a hot spot.
    heat = per_pixel.point(lambda v: 0 if v <= tolerance else min(255, 64 + v * 3))
    heat = heat.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.GaussianBlur(4))
    heat = ImageOps.autocontrast(heat) if differing else heat
    heatmap = ImageOps.colorize(heat, black=(12, 16, 64), white=(215, 25, 28),
                                mid=(250, 200, 40), blackpoint=0, whitepoint=255, midpoint=110)
    return ImageDiff(ratio=ratio, differing_pixels=differing, width=width, height=height,
                     note=note, diff_png=_png(diff), heatmap_png=_png(heatmap))
