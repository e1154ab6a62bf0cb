"""Item content for the multi-modal baselines: one vector per item and modality.

The encoding stage stores one vector per described field (`text_embeddings`: title, brand,
categories, description, ... each a MiniLM sentence vector) and one per picture
(`image_embeddings`: EfficientNet-Lite0 features). Baselines such as VBPR and FREEDOM take one
feature vector per item and modality, as MMRec's `text_feat.npy` / `image_feat.npy` give them.

Pooling (`pool_item_content`):

- text: the mean of the item's *original* vectors of the fields whose modality is `text`
  (title, brand, categories, description, ...). MMRec encodes the concatenation of those fields as
  one sentence; the mean of the per-field sentence vectors is the store's nearest equivalent.
  The picture described as text (field `image`, modality `visual`) is left out: it is derived from
  the picture, which the visual modality already carries as CNN features, as in MMRec's inputs.
- visual: the picture features as stored (`image_features`).
- An item without any vector of a modality (no text field, no picture) gets the mean vector of the
  items that have one, so similarities and projections stay finite and uninformative for it.
- A dataset without pictures (Beauty, MovieLens here) has `visual = None`: models run text-only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from neggen_model.config import Modality
from neggen_model.features import ItemFeatures

#: Fields of the text store pooled into the text modality are those of modality "text";
#: the picture features come from the token of this name.
PICTURE_TOKEN = "image_features"
CONTENT_MODALITIES: tuple[Modality, ...] = ("text", "visual")


@dataclass(frozen=True)
class ItemContent:
    """float32 [n_items, dim] per modality, or None where the dataset lacks that modality."""

    text: np.ndarray | None = None
    visual: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.text is None and self.visual is None:
            raise ValueError("item content needs at least one modality (text or visual); both are None")
        rows = set()
        for name in CONTENT_MODALITIES:
            matrix = getattr(self, name)
            if matrix is None:
                continue
            if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or min(matrix.shape) == 0:
                shape = getattr(matrix, "shape", type(matrix).__name__)
                raise ValueError(f"{name} features must be a non-empty 2-D array [n_items, dim], got {shape}")
            if not np.isfinite(matrix).all():
                raise ValueError(f"{name} features hold NaN or inf")
            object.__setattr__(self, name, np.ascontiguousarray(matrix, dtype=np.float32))
            rows.add(matrix.shape[0])
        if len(rows) > 1:
            raise ValueError(f"text and visual features cover different numbers of items: {self.text.shape} vs {self.visual.shape}")

    @property
    def n_items(self) -> int:
        return (self.text if self.text is not None else self.visual).shape[0]

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return tuple(m for m in CONTENT_MODALITIES if getattr(self, m) is not None)

    def matrices(self) -> dict[Modality, np.ndarray]:
        return {m: getattr(self, m) for m in self.modalities}

    def only(self, modalities: tuple[Modality, ...]) -> ItemContent:
        """The same content restricted to the given modalities (those it has)."""
        kept = {m: getattr(self, m) if m in modalities else None for m in CONTENT_MODALITIES}
        return ItemContent(**kept)

    def check_items(self, n_items: int, model: str) -> None:
        """Raise a clear error when the content does not describe exactly n_items items."""
        if self.n_items != n_items:
            shapes = ", ".join(f"{m} {getattr(self, m).shape}" for m in self.modalities)
            raise ValueError(f"{model}: item features ({shapes}) have {self.n_items} rows, the interactions have {n_items} items")

    def fingerprint(self) -> str:
        """SHA-256 of the matrices: ties a run to the content it was trained with."""
        digest = hashlib.sha256()
        for name in self.modalities:
            matrix = getattr(self, name)
            digest.update(f"{name}{matrix.shape}".encode())
            digest.update(matrix.tobytes())
        return digest.hexdigest()


def _fill_absent(matrix: np.ndarray, present: np.ndarray) -> np.ndarray:
    if present.all() or not present.any():
        return matrix
    out = matrix.copy()
    out[~present] = matrix[present].mean(axis=0)
    return out


def pool_item_content(features: ItemFeatures) -> ItemContent:
    """One vector per item and modality from the encoding stage's tokens (pooling: module docstring)."""
    text_tokens = [t for t in features.tokens if t.modality == "text"]
    text = None
    if text_tokens:
        dims = {t.dim for t in text_tokens}
        if len(dims) > 1:
            raise ValueError(f"text fields have different dimensions {sorted(dims)}; one text encoder expected")
        present = np.stack([t.present for t in text_tokens], axis=1)  # [n_items, n_fields]
        total = sum(t.versions["original"] * t.present[:, None] for t in text_tokens)
        count = present.sum(axis=1)
        text = (total / np.maximum(count, 1)[:, None]).astype(np.float32)
        text = _fill_absent(text, count > 0)
    visual = None
    picture = [t for t in features.tokens if t.name == PICTURE_TOKEN]
    if picture and picture[0].present.any():
        visual = _fill_absent(picture[0].versions["original"], picture[0].present)
    if text is None and visual is None:
        raise ValueError(f"no text field and no picture features among tokens {[t.name for t in features.tokens]}")
    return ItemContent(text=text, visual=visual)
