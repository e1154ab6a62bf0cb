"""The engine interface: a batch of requests in, one result per request out, in order; and
what the engines that load local model folders share (naming and identifying the folder)."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pipeline.llm.types import Request, Result


class EngineUnavailable(RuntimeError):
    """The configured engine cannot run here (not built yet, or a dependency is missing)."""


class Engine(ABC):
    """Generates text for batches of requests.

    `generate` never raises for a single bad request: that request's `Result` carries
    `error` instead, and the others still come back. `kind` and `fingerprint` enter the
    cache key; `fingerprint` must change whenever the same request could get another answer.
    """

    kind: ClassVar[str]

    def __init__(self, model: str):
        self.model = model

    @property
    def fingerprint(self) -> str:
        return self.model

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[Result]: ...

    def close(self) -> None:
        """Release what the engine holds (connections, models); idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"

    def _error(self, message: str, latency_s: float = 0.0, tries: int = 1) -> Result:
        return Result(engine=self.kind, model=self.model, error=message, latency_s=latency_s, tries=tries)


#: Configs hashed into a folder's identity. The processor configs exist only in multimodal
#: folders (image size, patches per picture change a VLM's answer), so a text-only folder's
#: identity, and its cache keys, stay what they were before they were added.
IDENTITY_CONFIGS = ("config.json", "preprocessor_config.json", "processor_config.json")


def folder_identity(folder: Path) -> str:
    """A digest of a model folder's configs and its weight files' names and sizes: cheap to
    take (no hashing of gigabytes), and it changes when the weights are replaced."""
    h = hashlib.sha256()
    for name in IDENTITY_CONFIGS:
        config = folder / name
        if config.is_file():
            h.update(config.read_bytes())
    for f in sorted(folder.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()


def looks_like_hub_id(model: str) -> bool:
    """`name` or `org/name` (a Hugging Face Hub id) rather than a file system path."""
    return not (Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") > 1)
