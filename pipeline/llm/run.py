"""Run one generation stage over a table of items: cache first, then batched generation of
the misses, validation, retries with new seeds, and failures recorded with their reason.

The stages, their templates and what each reads are described once in `stages.py`. The
`description` stage reads the items' `image_path`, `image_status`, `title`, `brand`,
`categories` and `description`; the others read earlier stages' outputs, which
`join_texts(items, description=..., masked=...)` adds as `<stage>_text` columns. The
description stage sends only items with a usable picture to the engine; the others get
their textual metadata alone (engine `none`, 0 attempts).

`prompt_mode="structured"` (masked, negative, direct): the `*_structured` templates, each
request carrying the JSON schema of its answer; the answer's edits are applied to the text
(the stage's `apply`) and the result is validated like free text. An answer that cannot
be applied is retried and recorded like an invalid output, with the reason.

Similarity (in the metadata of `negative` and `direct`): the mean token Jaccard between
each positive description and its negative (lower-case word sets, |A∩B| / |A∪B|).

Tokens (in the metadata): `prompt_tokens` and `completion_tokens`, summed over the requests
this run sent to the engine (every attempt; cache hits cost none), as the engine counted them;
None when it counted none (`catalog`, `visual`, or everything from the cache).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from tqdm.auto import tqdm

from pipeline.config.generation import PromptMode
from pipeline.llm.cache import GenerationCache
from pipeline.llm.engines.base import Engine
from pipeline.llm.prompts import template_version
from pipeline.llm.stages import STAGES, GenerationStage, stage as stage_named, text_column, value
from pipeline.llm.types import Request, Result, SamplingParams
from pipeline.llm.validate import clean_output, token_jaccard

SOURCE_COLUMN = text_column("description")
MASKED_COLUMN = text_column("masked")
OUTPUT_COLUMNS = ["item_id", "text", "engine", "model", "template_version", "cache_hit", "attempts"]
# `failed_at`: the stage where the item failed: this one, or an earlier one whose output it lacks
# (see pipeline/generation.py: such items are recorded in every later stage, reason "upstream: ...").
FAILURE_COLUMNS = ["item_id", "stage", "reason", "last_output", "attempts", "failed_at"]


class StageRun(NamedTuple):
    outputs: pd.DataFrame  # OUTPUT_COLUMNS (+ `image_text` for the description stage)
    failures: pd.DataFrame  # FAILURE_COLUMNS
    meta: dict


def join_texts(items: pd.DataFrame, description: pd.DataFrame | None = None,
               masked: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """`items` with `description_text` / `masked_text` from earlier stages' outputs."""
    out = items
    for column, stage_out in ((SOURCE_COLUMN, description), (MASKED_COLUMN, masked)):
        if stage_out is not None:
            out = out.drop(columns=[column], errors="ignore").merge(
                stage_out[["item_id", "text"]].rename(columns={"text": column}), on="item_id", how="inner"
            )
    return out


class _Item:
    """One item of a stage. No `request`: a description from metadata alone, or, with a
    `failure`, an item no request can be made for (recorded as failed, 0 attempts)."""

    __slots__ = ("item_id", "request", "source", "masked", "row", "failure")

    def __init__(self, item_id, request: Request | None, source: str, masked: str, row: dict,
                 failure: str | None = None):  # fmt: skip
        self.item_id, self.request, self.source, self.masked, self.row = item_id, request, source, masked, row
        self.failure = failure


def _prepare(items: pd.DataFrame, stage: GenerationStage, sampling: SamplingParams, prompts_dir: Path | None,
             prompt_mode: PromptMode) -> list[_Item]:  # fmt: skip
    need = [text_column(earlier) for earlier in stage.reads]
    missing = [c for c in ["item_id", *need] if c not in items.columns]
    if missing:
        raise ValueError(
            f"stage {stage.name!r} needs column(s) {', '.join(missing)}; use join_texts() to add earlier stages' outputs"
        )
    prepared = []
    for row in items.to_dict("records"):
        source = value(row, SOURCE_COLUMN) or ""
        masked = value(row, MASKED_COLUMN) or ""
        if prompt_mode == "structured":
            request, failure = stage.structured_request(source, masked, sampling, prompts_dir)
        else:
            request, failure = stage.request(row, source, masked, sampling, prompts_dir), None
        prepared.append(_Item(row["item_id"], request, source, masked, row, failure))
    return prepared


def _template(stage: GenerationStage, prompt_mode: PromptMode) -> str:
    if prompt_mode == "free_text":
        return stage.template
    if prompt_mode == "structured" and stage.structured_template is not None:
        return stage.structured_template
    structured = ", ".join(name for name, s in STAGES.items() if s.structured_template)
    raise ValueError(f"stage {stage.name!r} has no prompt mode {prompt_mode!r} (structured: {structured})")


def generate_stage(
    items: pd.DataFrame,
    stage: str,
    engine: Engine,
    cache: GenerationCache | None = None,
    *,
    sampling: SamplingParams | None = None,
    batch_size: int = 64,
    max_attempts: int = 3,
    keep_source_description: bool = True,
    progress: bool = True,
    prompts_dir: Path | None = None,
    prompt_mode: PromptMode = "free_text",
) -> StageRun:
    """Generate `stage` for every item; see the module docstring for the columns read.

    Each batch: look its requests up in the cache, generate the misses (one engine call per
    batch, identical requests once), store them (durable before the next batch starts),
    validate; invalid or failed items are tried again with seed + 1, + 2, ... up to
    `max_attempts`, then recorded in `failures` with the reason and the last output.
    """
    stage = stage_named(stage)
    sampling = sampling or SamplingParams()
    template = _template(stage, prompt_mode)
    version = template_version(template, prompts_dir)
    t0 = time.perf_counter()
    prepared = _prepare(items, stage, sampling, prompts_dir, prompt_mode)
    outputs: list[dict] = []
    failures: list[dict] = []
    counters = {"cache_hits": 0, "cache_misses": 0, "generated": 0, "attempts": 0, "prompt_tokens": None,
                "completion_tokens": None}  # fmt: skip
    bar = tqdm(total=len(prepared), desc=f"generate {stage.name}", unit="item", disable=not progress, leave=False)
    try:
        for start in range(0, len(prepared), batch_size):
            batch = prepared[start : start + batch_size]
            _run_batch(batch, stage, engine, cache, sampling, version, max_attempts,
                       keep_source_description, prompt_mode, outputs, failures, counters)  # fmt: skip
            bar.update(len(batch))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    out = pd.DataFrame(outputs, columns=OUTPUT_COLUMNS + list(stage.extra_columns))
    fail = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    similarity = None
    if stage.writes_negative and len(out):
        source_of = {p.item_id: p.source for p in prepared}
        scores = [token_jaccard(source_of[i], t) for i, t in zip(out["item_id"], out["text"])]
        similarity = {"metric": "token_jaccard", "mean": float(sum(scores) / len(scores))}
    meta = {
        "stage": stage.name,
        "template": template,
        "template_version": version,
        "prompt_mode": prompt_mode,
        "engine": engine.kind,
        "model": engine.model,
        "items": len(prepared),
        "ok": len(out),
        "failed": len(fail),
        **counters,
        "seconds": round(seconds, 3),
        "items_per_s": round(len(prepared) / seconds, 1) if seconds > 0 else None,
        "similarity": similarity,
    }
    return StageRun(out, fail, meta)


def _run_batch(batch: Sequence[_Item], stage, engine, cache, sampling, version, max_attempts,
               keep_source_description, prompt_mode, outputs, failures, counters) -> None:  # fmt: skip
    pending = []
    for item in batch:
        if item.failure is not None:
            failures.append({"item_id": item.item_id, "stage": stage.name, "reason": item.failure, "last_output": None,
                             "attempts": 0, "failed_at": stage.name})  # fmt: skip
        elif item.request is None:  # description stage, no picture: metadata only
            outputs.append(_output(item, stage, None, "none", "", version, False, 0, keep_source_description))
        else:
            pending.append(item)
    last: dict[int, tuple[str, str | None]] = {}
    for attempt in range(max_attempts):
        if not pending:
            break
        requests = [p.request.with_seed(sampling.seed + attempt) for p in pending]
        results, hit = _lookup_or_generate(requests, engine, cache, counters)
        counters["attempts"] += len(pending)
        retry = []
        for item, result, was_hit in zip(pending, results, hit):
            if not result.ok:
                last[id(item)] = (f"engine error: {result.error}", None)
                retry.append(item)
                continue
            text = clean_output(result.text)
            if prompt_mode == "structured":
                edit = stage.apply(text, item.source, item.masked)
                if edit.text is None:
                    last[id(item)] = (edit.reason, text)
                    retry.append(item)
                    continue
                text = edit.text
            verdict = stage.check(text, item.source, item.masked)
            if not verdict:
                last[id(item)] = (verdict.reason, text)
                retry.append(item)
                continue
            outputs.append(_output(item, stage, text, result.engine, result.model, version, was_hit,
                                   attempt + 1, keep_source_description))  # fmt: skip
        pending = retry
    for item in pending:
        reason, text = last[id(item)]
        failures.append({"item_id": item.item_id, "stage": stage.name, "reason": reason, "last_output": text,
                         "attempts": max_attempts, "failed_at": stage.name})  # fmt: skip


def _lookup_or_generate(requests: list[Request], engine: Engine, cache: GenerationCache | None,
                        counters: dict) -> tuple[list[Result], list[bool]]:  # fmt: skip
    keys = [cache.key(r, engine) if cache is not None else str(i) for i, r in enumerate(requests)]
    found = cache.get_many(keys) if cache is not None else {}
    todo: dict[str, Request] = {}
    for key, request in zip(keys, requests):
        if key not in found:
            todo.setdefault(key, request)
    generated: dict[str, Result] = {}
    if todo:
        results = engine.generate(list(todo.values()))
        if len(results) != len(todo):
            raise RuntimeError(f"engine {engine!r} returned {len(results)} results for {len(todo)} requests")
        generated = dict(zip(todo, results))
        _count_tokens(results, counters)
        if cache is not None:
            cache.put_many((k, r, requests[0].template) for k, r in generated.items())
    counters["cache_hits"] += sum(1 for k in keys if k in found)
    counters["cache_misses"] += sum(1 for k in keys if k not in found)
    counters["generated"] += len(todo)
    return [found.get(k) or generated[k] for k in keys], [k in found for k in keys]


def _count_tokens(results: Sequence[Result], counters: dict) -> None:
    for result in results:
        for name in ("prompt_tokens", "completion_tokens"):
            count = getattr(result, name)
            if count is not None:
                counters[name] = (counters[name] or 0) + count


def _output(item: _Item, stage: GenerationStage, text, engine, model, version, hit, attempts,
            keep_source_description) -> dict:  # fmt: skip
    return {"item_id": item.item_id, "engine": engine, "model": model, "template_version": version,
            "cache_hit": hit, "attempts": attempts, **stage.output(item.row, text, keep_source_description)}  # fmt: skip
