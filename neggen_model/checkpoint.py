"""Safe persistence: tensors in safetensors (never pickle), everything else in JSON, written atomically
and durably (neggen_model/atomic.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from neggen_model.atomic import atomic_path, write_json
from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.models import MODELS, Recommender

MODEL_TENSORS = "best_model.safetensors"
MODEL_META = "best_model.json"


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomic, durable safetensors write; tensors are copied to contiguous CPU memory first, as the format requires."""
    with atomic_path(path) as tmp:
        save_file({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}, str(tmp), metadata=metadata)


def read_tensors(path: Path) -> dict[str, Tensor]:
    return load_file(str(path))


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Split an optimizer state into flat tensors "<param index>.<key>" and JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value for index, slots in state["state"].items() for key, value in slots.items()}
    non_tensor = [name for name, value in tensors.items() if not isinstance(value, Tensor)]
    if non_tensor:
        raise TypeError(f"optimizer state holds non-tensor values {non_tensor}; cannot store them in safetensors")
    return tensors, state["param_groups"]


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: list[dict[str, Any]]
) -> None:
    """Inverse of flatten_optimizer."""
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_model(directory: Path, model: Recommender, config: TrainConfig, data: InteractionData) -> None:
    """Store weights and what is needed to rebuild the model: its name, config and graph fingerprint."""
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / MODEL_TENSORS, dict(model.state_dict()))
    write_json(
        directory / MODEL_META,
        {
            "model": model.name,
            "config": config.model_dump(mode="json"),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "train_fingerprint": data.train_fingerprint(),
        },
    )


def load_model(directory: Path, data: InteractionData, device: str | None = None) -> tuple[Recommender, TrainConfig]:
    """Rebuild a model saved by save_model, on the same training graph (checked by fingerprint).

    The graph is an input rather than part of the file: LightGCN's weights only mean something
    propagated over the interactions they were trained on, which the caller already holds.
    """
    meta = json.loads((directory / MODEL_META).read_text())
    if meta["train_fingerprint"] != data.train_fingerprint():
        raise ValueError(f"{directory} was trained on other interactions than the data given")
    config = TrainConfig(**{**meta["config"], **({"device": device} if device else {})})
    model = MODELS[meta["model"]](data, config)
    model.load_state_dict(read_tensors(directory / MODEL_TENSORS))
    return model.to(config.device), config
