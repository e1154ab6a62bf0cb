"""The demo items' pictures: each item's shape, filled with its colour and pattern (its three
image-only attributes), drawn with PIL."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from pipeline.demo.world import COLOURS

#: Picture background; never one of the drawn colours or their shades.
BACKGROUND: tuple[int, int, int] = (246, 244, 238)
#: Pattern ink = this fraction of the item colour (a darker shade of it).
SHADE = 0.55


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def draw_item(
    colour: str, pattern: str, shape: str, size: int, jitter: np.ndarray
) -> Image.Image:
    """The item's picture: its shape, filled with its colour and pattern, on `BACKGROUND`.

    `jitter` holds 4 numbers in [0, 1) (scale, x offset, y offset, pattern phase) so that
    items with the same attributes do not share one picture.
    """
    rgb = COLOURS[colour]
    ink = tuple(int(c * SHADE) for c in rgb)
    fill = Image.new("RGB", (size, size), rgb)
    pen = ImageDraw.Draw(fill)
    period = max(4, size // 8)
    phase = int(jitter[3] * period)
    if pattern == "striped":
        width = max(1, period // 3)
        for y in range(phase - period, size, period):
            pen.rectangle([0, y, size, y + width - 1], fill=ink)
    elif pattern == "dotted":
        rad = max(1, period // 4)
        for y in range(phase - period, size + period, period):
            for x in range(phase - period, size + period, period):
                pen.ellipse([x - rad, y - rad, x + rad, y + rad], fill=ink)
    elif pattern == "checked":
        width = max(1, period // 5)
        for t in range(phase - period, size, period):
            pen.rectangle([0, t, size, t + width - 1], fill=ink)
            pen.rectangle([t, 0, t + width - 1, size], fill=ink)
    elif pattern != "solid":
        raise ValueError(f"unknown pattern {pattern!r}")

    mask = Image.new("L", (size, size), 0)
    outline = ImageDraw.Draw(mask)
    r = size * (0.34 + 0.1 * float(jitter[0]))
    cx = size / 2 + (float(jitter[1]) - 0.5) * size * 0.1
    cy = size / 2 + (float(jitter[2]) - 0.5) * size * 0.1
    if shape == "circle":
        outline.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        outline.polygon(_shape_points(shape, cx, cy, r), fill=255)

    picture = Image.new("RGB", (size, size), BACKGROUND)
    picture.paste(fill, (0, 0), mask)
    return picture
