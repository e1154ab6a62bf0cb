"""Generation of NegGen's texts: item descriptions (§3.2.1), masked templates (§3.2.2),
negatives by completion (§3.2.3) or directly (§2.1), through interchangeable engines.

    types.py      Request / Result / SamplingParams (one request and one result type)
    prompts.py    the paper's templates (prompts/*.md), rendering, the item description
    engines/      Engine interface; catalog (no LLM), visual (no VLM), openai (HTTP)
    cache.py      content-addressed, crash-safe cache of generations (SQLite WAL)
    validate.py   checks on outputs (a masked text has [MASK], a completion none, ...)
    stages.py     the four stages, each described once: table, templates, inputs, engine, requests, check
    structured.py the structured prompt mode: schemas of the edits a model names, applying them
    constrained.py JSON-schema constrained decoding for the transformers engine
    run.py        generate_stage: cache → batched generation → validation → retries
"""

from pipeline.config.generation import GenerationConfig
from pipeline.llm.cache import GenerationCache, cache_key
from pipeline.llm.engines import Engine, EngineUnavailable, build_engine
from pipeline.llm.prompts import build_description, render, render_request, template_version
from pipeline.llm.run import StageRun, generate_stage, join_texts
from pipeline.llm.stages import STAGES
from pipeline.llm.types import ImagePart, Message, Request, Result, SamplingParams, TextPart

__all__ = [
    "STAGES", "Engine", "EngineUnavailable", "GenerationCache", "GenerationConfig", "ImagePart",
    "Message", "Request", "Result", "SamplingParams", "StageRun", "TextPart", "build_description",
    "build_engine", "cache_key", "generate_stage", "join_texts", "render", "render_request",
    "template_version",
]  # fmt: skip
