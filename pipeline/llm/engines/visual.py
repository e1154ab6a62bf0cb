"""Image → text on CPU without a VLM: colour names and simple pattern/shape cues.

The picture is reduced to a thumbnail. If its border is one uniform colour, that is taken
as the background and the rest as the item (else the whole picture is the item). Each item
pixel gets the nearest named colour of `lexicon.COLOUR_PALETTE` in CIELAB; the names
covering enough of the item are reported. With a clean background, two cheap cues follow:
the pattern (how the second colour is laid out: full rows and/or columns = striped or
checked, otherwise dotted) and the outline (fill ratio of the bounding box and where the
widest row sits: square, circle, triangle, diamond, star).

The output says it is feature-derived: it starts with `[from image features]`.

Extension point: `FEATURE_STEPS` is the ordered list of describers, each taking the
`Picture` and returning a phrase (or None). A learned labeller (an EfficientNet's ImageNet
classes, say) is one more function appended there; the engine joins whatever the steps say.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config.generation import VisualEngineConfig
from pipeline.llm.engines.base import Engine
from pipeline.llm.lexicon import COLOUR_PALETTE, VISUAL_PATTERNS, VISUAL_SHAPES
from pipeline.llm.types import ImagePart, Request, Result

FEATURE_PREFIX = "[from image features]"
VERSION = 1

_NAMES = tuple(COLOUR_PALETTE)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in 0-255 → CIELAB (D65)."""
    c = rgb.astype(np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_PALETTE_LAB = rgb_to_lab(np.array([COLOUR_PALETTE[n] for n in _NAMES]))


def colour_names(rgb: np.ndarray) -> np.ndarray:
    """Index into the palette's names of the nearest named colour, per pixel."""
    lab = rgb_to_lab(rgb.reshape(-1, 3))
    d = ((lab[:, None, :] - _PALETTE_LAB[None, :, :]) ** 2).sum(-1)
    return d.argmin(1).reshape(rgb.shape[:-1])


@dataclass
class Picture:
    """What the steps look at: the thumbnail, its item mask and per-pixel colour names."""

    rgb: np.ndarray  # (h, w, 3) uint8
    lab: np.ndarray  # (h, w, 3) CIELAB
    item: np.ndarray  # (h, w) bool: pixels that belong to the item
    names: np.ndarray  # (h, w) palette index per pixel
    background: str | None  # name of a uniform background colour, if there is one
    config: VisualEngineConfig

    def colour_shares(self) -> list[tuple[str, float]]:
        counts = np.bincount(self.names[self.item], minlength=len(_NAMES))
        total = max(1, int(counts.sum()))
        order = np.argsort(-counts, kind="stable")
        return [(_NAMES[i], counts[i] / total) for i in order if counts[i]]


def load_picture(image: Image.Image, config: VisualEngineConfig) -> Picture:
    image = image.convert("RGB")
    image.thumbnail((config.thumbnail_px, config.thumbnail_px), Image.Resampling.BOX)
    rgb = np.asarray(image, dtype=np.uint8)
    lab = rgb_to_lab(rgb)
    border = np.concatenate([lab[0], lab[-1], lab[1:-1, 0], lab[1:-1, -1]])
    bg = np.median(border, axis=0)
    near = np.sqrt(((border - bg) ** 2).sum(-1)) < 10.0
    background = None
    item = np.ones(rgb.shape[:2], dtype=bool)
    if near.mean() >= 0.7:
        fg = np.sqrt(((lab - bg) ** 2).sum(-1)) >= 10.0
        if 0.02 <= fg.mean() <= 0.98:
            item = fg
            background = _NAMES[int(((_PALETTE_LAB - bg) ** 2).sum(-1).argmin())]
    return Picture(rgb=rgb, lab=lab, item=item, names=colour_names(rgb), background=background, config=config)


def describe_colours(pic: Picture) -> str | None:
    shares = [(n, s) for n, s in pic.colour_shares() if s >= pic.config.min_colour_share]
    shares = shares[: pic.config.max_colours]
    if not shares:
        return None
    names = [n for n, _ in shares]
    if shares[0][1] >= 0.5:
        rest = f", some {' and '.join(names[1:])}" if len(names) > 1 else ""
        return f"Colours: mostly {names[0]}{rest}."
    return f"Colours: {', '.join(names[:-1])} and {names[-1]}." if len(names) > 1 else f"Colours: {names[0]}."


def describe_pattern(pic: Picture) -> str | None:
    if pic.background is None:
        return None
    shares = pic.colour_shares()
    if not shares:
        return None
    # The second "colour" is what differs clearly from the main one (a darker shade of the
    # same hue counts, even when both get the same name).
    main = pic.item & (pic.names == _NAMES.index(shares[0][0]))
    centre = np.median(pic.lab[main], axis=0)
    second = pic.item & (np.sqrt(((pic.lab - centre) ** 2).sum(-1)) >= 15.0)
    if second.sum() < 0.03 * pic.item.sum():
        return f"Pattern: {VISUAL_PATTERNS[0]}."
    rows = _full_lines(second, pic.item, axis=1)
    cols = _full_lines(second, pic.item, axis=0)
    solid, striped, dotted, checked = VISUAL_PATTERNS
    if rows and cols:
        return f"Pattern: {checked}."
    if rows or cols:
        return f"Pattern: {striped}."
    return f"Pattern: {dotted}."


def _full_lines(mark: np.ndarray, item: np.ndarray, axis: int) -> bool:
    """Whether some lines (rows for axis=1) are almost entirely `mark` across the item."""
    n_item = item.sum(axis=axis)
    frac = mark.sum(axis=axis) / np.maximum(n_item, 1)
    wide = n_item >= max(3, 0.3 * n_item.max())
    return bool(((frac >= 0.85) & wide).sum() >= 2)


def describe_shape(pic: Picture) -> str | None:
    if pic.background is None:
        return None
    ys, xs = np.nonzero(pic.item)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    box = pic.item[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill = box.mean()
    if not 0.6 <= h / w <= 1.7 or min(h, w) < 8:
        return None
    circle, square, triangle, diamond, star = VISUAL_SHAPES
    if fill >= 0.9:
        shape = square
    elif fill >= 0.68:
        shape = circle
    elif fill >= 0.44:
        widest = np.argmax(box.sum(axis=1)) / max(1, h - 1)
        shape = triangle if widest >= 0.7 else diamond
    elif fill >= 0.25:
        shape = star
    else:
        return None
    return f"Shape: {shape}."


#: The describers, in output order. Append a step to add a cue (e.g. a learned labeller).
FEATURE_STEPS: list[Callable[[Picture], str | None]] = [describe_colours, describe_pattern, describe_shape]


def describe_picture(image: Image.Image, config: VisualEngineConfig | None = None) -> str:
    pic = load_picture(image, config or VisualEngineConfig())
    phrases = [p for p in (step(pic) for step in FEATURE_STEPS) if p]
    return " ".join([FEATURE_PREFIX, *phrases])


def open_image(part: ImagePart, draft_px: int | None = 256) -> Image.Image:
    """The picture of `part`, lazily opened. A JPEG is decoded at reduced size (at least
    `draft_px` a side), enough for colour cues; None keeps the full size (a VLM's processor
    resizes to its own resolution)."""
    if part.data is not None:
        image = Image.open(io.BytesIO(part.data))
    else:
        image = Image.open(Path(part.path))
    if draft_px is not None:
        image.draft("RGB", (draft_px, draft_px))
    return image


class VisualEngine(Engine):
    """Describes the image of each request; requests without an image get an error."""

    kind = "visual"

    def __init__(self, config: VisualEngineConfig | None = None):
        self.config = config or VisualEngineConfig()
        super().__init__(f"visual-features-v{VERSION}")

    @property
    def fingerprint(self) -> str:
        c = self.config
        return f"{self.model}|colours={c.max_colours}|share={c.min_colour_share}|px={c.thumbnail_px}"

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        return [self._one(r) for r in requests]

    def _one(self, request: Request) -> Result:
        t0 = time.perf_counter()
        images = request.images
        if not images:
            return self._error("visual engine: the request has no image part")
        try:
            with open_image(images[0]) as image:
                text = describe_picture(image, self.config)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            return self._error(f"visual engine: cannot read image: {err}", time.perf_counter() - t0)
        return Result(text=text, engine=self.kind, model=self.model, finish_reason="stop",
                      latency_s=time.perf_counter() - t0)  # fmt: skip
