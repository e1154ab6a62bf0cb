"""Throughput of the CPU generation engines on the demo items, cold and fully cached.

One run prints (and writes to bench/results/llm_engines.md):

* items/second of `generate_stage` per CPU engine and stage, first with a fresh generation
  cache (everything generated), then again on the same cache (everything a hit): the
  visual describer (description), the catalogue engine (masked, negative) on all demo
  items, and the transformers engine with SmolLM2-135M-Instruct (negative = the paper's
  Attribute Completion prompt over the catalogue's [MASK] templates) on the first
  `--llm-items` items; one attempt per item, so items/s counts one generation each;
* SmolLM2 load: first load (GGUF conversion into a fresh folder) vs later loads from
  the converted copy, in this process and in a new process (imports included);
* the transformers engine's batching speed-up: the same greedy requests decoded in
  batches of 8 and 16 vs one at a time (outputs compared).

    .venv/bin/python bench/llm_engines.py [--items 300] [--llm-items 24] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import Report  # noqa: E402
from pipeline.demo import DemoConfig, write_demo_source  # noqa: E402
from pipeline.llm.cache import GenerationCache  # noqa: E402
from pipeline.llm.engines import build_engine  # noqa: E402
from pipeline.llm.prompts import render_request  # noqa: E402
from pipeline.llm.run import generate_stage, join_texts  # noqa: E402
from pipeline.llm.types import SamplingParams  # noqa: E402
from pipeline.sources import read_amazon2014  # noqa: E402

RESULTS = REPO / "bench" / "results" / "llm_engines.md"


def stage_twice(items, stage, engine, folder: Path, **kwargs) -> list[dict]:
    """generate_stage on a fresh cache, then again on the same cache."""
    cache = GenerationCache(folder)
    rows = []
    for label in ("cold", "cached"):
        run = generate_stage(items, stage, engine, cache, progress=False, max_attempts=1, **kwargs)
        m = run.meta
        rows.append({
            "engine": engine.kind, "stage": stage, "cache": label, "items": m["items"], "seconds": m["seconds"],
            "items_per_s": m["items"] / m["seconds"] if m["seconds"] else float("inf"),
            "valid": m["ok"], "generated": m["generated"], "hits": m["cache_hits"], "run": run,
        })  # fmt: skip
    return rows


def cached_load_new_process(converted_dir: Path) -> float:
    code = (
        "import time; t=time.perf_counter(); from pipeline.llm.engines import build_engine; "
        f"e=build_engine({{'kind':'transformers','device':'cpu','converted_dir':{str(converted_dir)!r}}}); "
        "assert not e.converted_now; print(time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300, help="demo items (catalogue and visual engines)")
    parser.add_argument("--llm-items", type=int, default=24, help="items for the transformers engine")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    import torch
    import transformers

    report = Report()
    say = report.say

    with tempfile.TemporaryDirectory(prefix="neggen-bench-llm-") as tmp:
        tmp = Path(tmp)
        out = write_demo_source(tmp / "demo", DemoConfig(seed=0, n_users=max(50, args.items), n_items=args.items))
        items = read_amazon2014(out).items.rename(columns={"item_source": "item_id"})
        rows: list[dict] = []

        visual = build_engine({"kind": "visual"})
        rows += stage_twice(items, "description", visual, tmp / "cache-visual")
        described = join_texts(items, rows[0]["run"].outputs)
        catalog = build_engine({"kind": "catalog"}, catalogue=items)
        rows += stage_twice(described, "masked", catalog, tmp / "cache-catalog")
        masked = join_texts(items, rows[0]["run"].outputs, rows[2]["run"].outputs)
        rows += stage_twice(masked, "negative", catalog, tmp / "cache-catalog")

        # SmolLM2: conversion into a fresh folder, then loads from the converted copy
        converted = tmp / "models"
        config = {"kind": "transformers", "device": "cpu", "batch_size": 16, "converted_dir": str(converted)}
        t0 = time.perf_counter()
        first = build_engine(config)
        first_s = time.perf_counter() - t0
        first.close()
        t0 = time.perf_counter()
        llm = build_engine(config)
        again_s = time.perf_counter() - t0
        new_process_s = cached_load_new_process(converted)
        llm_items = masked.head(args.llm_items)
        sampling = SamplingParams(temperature=0.7, max_tokens=args.max_tokens)
        rows += stage_twice(llm_items, "negative", llm, tmp / "cache-llm", sampling=sampling, batch_size=32)

        # batching speed-up (greedy, so the outputs must be the same)
        greedy = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
        requests = [render_request("attribute_completion", greedy, context={"source": r.description_text},
                                   masked_description=r.masked_text) for r in llm_items.head(16).itertuples()]  # fmt: skip
        timings = {}
        texts = {}
        for batch in (16, 8, 1):
            llm.config = llm.config.model_copy(update={"batch_size": batch})
            t0 = time.perf_counter()
            results = llm.generate(requests) if batch > 1 else [llm.generate([r])[0] for r in requests]
            timings[batch] = time.perf_counter() - t0
            texts[batch] = [r.text for r in results]
        same = {b: sum(a == c for a, c in zip(texts[b], texts[1])) for b in (16, 8)}
        llm.close()

    say(f"# CPU generation engines on the demo items ({time.strftime('%Y-%m-%d')})")
    say()
    say(f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}; "
        f"transformers engine: {llm.model}, {llm.threads} torch thread(s), float32")  # fmt: skip
    say(f"demo: {args.items} items; SmolLM2 on the first {len(llm_items)} (temperature 0.7, max_tokens "
        f"{args.max_tokens}, engine batch 16); one attempt per item")  # fmt: skip
    say()
    say("| engine | stage | cache | items | seconds | items/s | valid |")
    say("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        say(f"| {r['engine']} | {r['stage']} | {r['cache']} | {r['items']} | {r['seconds']:.3f} | "
            f"{r['items_per_s']:,.{2 if r['items_per_s'] < 10 else 1}f} | {r['valid']}/{r['items']} |")  # fmt: skip
    failures = rows[-2]["run"].failures
    reasons = failures["reason"].str.replace(r"\d+(\.\d+)?", "N", regex=True).value_counts().to_dict()
    say()
    say(f"SmolLM2 completions passing pipeline.llm.validate: {rows[-2]['valid']}/{rows[-2]['items']}; "
        f"failure reasons: {reasons}")  # fmt: skip
    say()
    say(f"SmolLM2 load: first (GGUF → safetensors conversion) {first_s:.1f} s; from the converted copy "
        f"{again_s:.1f} s in the same process, {new_process_s:.1f} s in a new process (imports included)")  # fmt: skip
    say()
    say(f"Batching ({len(requests)} Attribute Completion requests, greedy, max_tokens {args.max_tokens}):")
    say()
    say("| batch | seconds | items/s | speed-up | same text as one-at-a-time |")
    say("|---:|---:|---:|---:|---:|")
    for b in (1, 8, 16):
        say(f"| {b} | {timings[b]:.1f} | {len(requests) / timings[b]:.2f} | {timings[1] / timings[b]:.2f}x | "
            f"{same.get(b, len(requests))}/{len(requests)} |")  # fmt: skip
    report.write(RESULTS)
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
