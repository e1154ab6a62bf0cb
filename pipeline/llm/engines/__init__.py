"""Generation engines behind one interface, built from a typed config.

| kind | what |
|---|---|
| `catalog` | no LLM: masks/substitutes attribute values from the catalogue's vocabulary |
| `visual` | no VLM: image → colour names and shape/pattern cues (CPU) |
| `openai` | any OpenAI-compatible `/v1/chat/completions` server |
| `transformers` | a local Hugging Face causal LM or VLM folder (CPU: the packaged SmolLM2-135M-Instruct, text only) |
| `vllm` | vLLM in-process on a GPU, or on CPU with vLLM's CPU build (offline batched `LLM.chat`, images included); a local model folder |
"""

from __future__ import annotations

import pandas as pd
from pydantic import TypeAdapter

from pipeline.config.generation import (
    CatalogEngineConfig,
    EngineConfig,
    OpenAIEngineConfig,
    TransformersEngineConfig,
    VisualEngineConfig,
    VLLMEngineConfig,
)
from pipeline.llm.engines.base import Engine, EngineUnavailable

__all__ = ["Engine", "EngineUnavailable", "build_engine", "parse_engine_config"]


def parse_engine_config(raw: dict | EngineConfig) -> EngineConfig:
    """Validate a config mapping (`{"kind": ..., ...}`) into its typed engine config."""
    return TypeAdapter(EngineConfig).validate_python(raw)


def build_engine(config: dict | EngineConfig, catalogue: pd.DataFrame | None = None) -> Engine:
    """The engine a config describes. The catalogue engine needs the items table."""
    config = parse_engine_config(config)
    if isinstance(config, CatalogEngineConfig):
        from pipeline.llm.engines.catalog import CatalogEngine

        if catalogue is None:
            raise EngineUnavailable("the catalog engine is built from the items table: pass catalogue=items")
        return CatalogEngine.from_items(catalogue, config)
    if isinstance(config, VisualEngineConfig):
        from pipeline.llm.engines.visual import VisualEngine

        return VisualEngine(config)
    if isinstance(config, OpenAIEngineConfig):
        from pipeline.llm.engines.openai import OpenAIEngine

        return OpenAIEngine(config)
    if isinstance(config, TransformersEngineConfig):
        from pipeline.llm.engines.transformers_engine import TransformersEngine

        return TransformersEngine(config)
    if isinstance(config, VLLMEngineConfig):
        from pipeline.llm.engines.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    raise TypeError(f"build_engine has no branch for engine kind {config.kind!r}")  # a kind added to EngineConfig only
