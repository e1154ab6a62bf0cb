"""Item modality tokens for the causal module: each token an encoded attribute of every item,
in its original form and in the form each negative source gave it (paper §3.2.4, eq. 8-9)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neggen_model.config import Modality, NegativeSource


@dataclass(frozen=True)
class ModalityToken:
    """One encoded attribute of every item (e.g. its title, its image description, its picture).

    `versions` maps "original" and each generated negative source ("generated", "direct") to a
    float32 [n_items, dim] matrix. A source that left the attribute unchanged (a picture is never
    regenerated) repeats the original. Rows of items without this attribute are zero and
    `present` is false there.
    """

    name: str
    modality: Modality
    versions: dict[str, np.ndarray]
    present: np.ndarray

    def __post_init__(self) -> None:
        if "original" not in self.versions:
            raise ValueError(f"token {self.name!r} has no original vectors")
        shape = self.versions["original"].shape
        for version, matrix in self.versions.items():
            if matrix.shape != shape or matrix.ndim != 2:
                raise ValueError(f"token {self.name!r}: {version} has shape {matrix.shape}, original {shape}")
            if not np.isfinite(matrix).all():
                raise ValueError(f"token {self.name!r}: {version} holds NaN or inf")
        if self.present.shape != (shape[0],) or self.present.dtype != bool:
            raise ValueError(f"token {self.name!r}: present must be a bool vector of {shape[0]} items")

    @property
    def dim(self) -> int:
        return self.versions["original"].shape[1]


@dataclass(frozen=True)
class TokenSet:
    """The arrays the causal module consumes: per token the original and the negative vectors,
    and per side which items have the token."""

    names: tuple[str, ...]
    modalities: tuple[Modality, ...]
    original: tuple[np.ndarray, ...]
    negative: tuple[np.ndarray, ...]
    present: np.ndarray  # bool [n_items, n_tokens]
    negative_present: np.ndarray  # bool [n_items, n_tokens]


@dataclass(frozen=True)
class ItemFeatures:
    n_items: int
    tokens: tuple[ModalityToken, ...]

    def __post_init__(self) -> None:
        for token in self.tokens:
            if token.versions["original"].shape[0] != self.n_items:
                raise ValueError(f"token {token.name!r} covers {token.versions['original'].shape[0]} items, not {self.n_items}")

    def token_set(self, modalities: tuple[Modality, ...], negatives: NegativeSource, seed: int) -> TokenSet:
        """Tokens of the chosen modalities with the chosen source's negatives.

        "uniform" (w/o NEG) gives every item the original tokens of one other item drawn uniformly
        (seeded, once), so training and ranking see the same negative, as with generated ones.
        """
        chosen = [t for t in self.tokens if t.modality in modalities]
        if not chosen:
            have = sorted({t.modality for t in self.tokens})
            raise ValueError(f"no token of modalities {list(modalities)}; the features have {have}")
        present = np.stack([t.present for t in chosen], axis=1)
        if negatives == "uniform":
            # Item i's partner: uniform over the n_items - 1 other items.
            offset = np.random.default_rng(seed).integers(1, self.n_items, size=self.n_items)
            partner = (np.arange(self.n_items) + offset) % self.n_items
            negative = tuple(t.versions["original"][partner] for t in chosen)
            negative_present = present[partner]
        else:
            missing = [t.name for t in chosen if negatives not in t.versions]
            if missing:
                raise ValueError(f'no "{negatives}" negatives for tokens {missing}; generate and encode them first')
            negative = tuple(t.versions[negatives] for t in chosen)
            negative_present = present
        return TokenSet(
            names=tuple(t.name for t in chosen),
            modalities=tuple(t.modality for t in chosen),
            original=tuple(t.versions["original"] for t in chosen),
            negative=negative,
            present=present,
            negative_present=negative_present,
        )


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norm > 0, norm, 1.0)


def negative_hardness(features: ItemFeatures, source: NegativeSource = "generated", chunk: int = 2048) -> dict[str, np.ndarray]:
    """How close each item's negative is to the item itself and to the real catalogue.

    An item is represented by its present tokens that the source regenerates (a picture is never
    regenerated and would only inflate the similarity), each scaled to unit norm and concatenated.
    Per item:

    * `hardness`: cosine of that vector for the original and for the negative: 1 = the negative is
      the item itself, low = a different item (the paper's "related but different" sits between);
    * `cohesion`: cosine of the negative with the nearest *other* real item: high = the negative
      looks like an item the catalogue has (every attribute swapped often makes another real item);
    * `changed_tokens`: how many of the item's tokens the source changed.
    """
    regenerated = [t for t in features.tokens if source in t.versions and not np.array_equal(t.versions[source], t.versions["original"])]
    if not regenerated:
        raise ValueError(f"no token has {source!r} vectors that differ from the originals")
    original = np.concatenate([_unit_rows(t.versions["original"]) * t.present[:, None] for t in regenerated], axis=1)
    negative = np.concatenate([_unit_rows(t.versions[source]) * t.present[:, None] for t in regenerated], axis=1)
    changed = sum((np.abs(t.versions[source] - t.versions["original"]).max(axis=1) > 0).astype(np.int64) for t in regenerated)
    original, negative = _unit_rows(original.astype(np.float32)), _unit_rows(negative.astype(np.float32))
    hardness = np.einsum("ij,ij->i", original, negative)
    cohesion = np.empty(features.n_items, np.float32)
    for start in range(0, features.n_items, chunk):
        block = negative[start : start + chunk] @ original.T  # [chunk, n_items]
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not the item itself
        cohesion[start : start + chunk] = block.max(axis=1)
    return {"hardness": hardness, "cohesion": cohesion, "changed_tokens": changed}
