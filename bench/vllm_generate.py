"""The generation stage with the in-process `vllm` engine on the demo items (GPU).

Builds the demo dataset's items as the data stage does (the demo world in Amazon 2014 format,
read, k-core, ids and split with the demo dataset's defaults, then the items table), and
runs §3.2.1 description (with the pictures) → §3.2.2 masking → §3.2.3 completion through
`generate_stage` for the first `--items` items, with one `vllm` engine (one model load) for
all three, a fresh generation cache, the pipeline's default sampling and one attempt per item
(so items/s counts one generation each). Prints and writes a JSON summary: items/s per stage,
prompt and generated tokens per stage (vLLM's counts) and generated tokens/s, validity (valid
outputs / items the stage got; end to end: valid negatives / items), failures by reason, GPU
name, vLLM version, model.

`--dry-run` runs the same script end to end with the CPU engines instead (`visual` describes,
`catalog` masks and completes): no GPU, no vLLM, no model.

    python bench/vllm_generate.py --model /models/Qwen2.5-VL-3B-Instruct [--items 300]
    python bench/vllm_generate.py --dry-run --items 20 --out /tmp/summary.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import DatasetConfig  # noqa: E402
from pipeline.config.generation import GenerationConfig  # noqa: E402
from pipeline.datastage import build_interactions, build_items  # noqa: E402
from pipeline.demo import DemoConfig, write_demo_source  # noqa: E402
from pipeline.llm.cache import GenerationCache  # noqa: E402
from pipeline.llm.engines import build_engine  # noqa: E402
from pipeline.llm.run import StageRun, generate_stage, join_texts  # noqa: E402
from pipeline.sources import read_amazon2014  # noqa: E402

RESULTS = REPO / "bench" / "results"


def demo_items(n: int, folder: Path):
    """The first `n` rows of the demo dataset's items table (the world has some to spare:
    k-core may drop a few items)."""
    dataset = DatasetConfig(format="demo", demo=DemoConfig(seed=0, n_items=max(20, n + n // 5),
                                                           n_users=max(1000, 2 * n)))  # fmt: skip
    raw = read_amazon2014(write_demo_source(folder, dataset.demo))
    table = build_interactions(raw, dataset.kcore, dataset.split_seed, dataset.use_given_split)
    return build_items(raw, table.interactions).head(n)


def stage_summary(run: StageRun) -> dict:
    m = run.meta
    reasons = run.failures["reason"].str.replace(r"\d+(\.\d+)?", "N", regex=True).str.slice(0, 160)
    return {
        "engine": m["engine"], "model": m["model"], "items": m["items"], "valid": m["ok"],
        "validity_rate": round(m["ok"] / m["items"], 4) if m["items"] else None,
        "seconds": m["seconds"], "items_per_s": m["items_per_s"], "generated": m["generated"],
        "prompt_tokens": m["prompt_tokens"], "completion_tokens": m["completion_tokens"],
        "completion_tokens_per_s": round(m["completion_tokens"] / m["seconds"], 1) if m["completion_tokens"] else None,
        "failures_by_reason": reasons.value_counts().to_dict(),
    }  # fmt: skip


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def vllm_version() -> str | None:
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local VLM folder (e.g. SmolVLM, Qwen2.5-VL-3B-Instruct); never downloaded")
    parser.add_argument("--dry-run", action="store_true", help="CPU engines (visual, catalog) instead of vllm")
    parser.add_argument("--items", type=int, default=300, help="demo items (default 300)")
    parser.add_argument("--batch-size", type=int, default=256, help="requests per engine call")
    parser.add_argument("--attempts", type=int, default=1, help="tries per item (the pipeline's default is 3)")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--out", type=Path, help="JSON summary (default: bench/results/vllm_generate[_dryrun].json)")
    args = parser.parse_args()
    if not args.dry_run:
        if args.model is None:
            parser.error("--model PATH is required: a local VLM folder (e.g. Qwen2.5-VL-3B-Instruct); "
                         "or --dry-run to run the script with the CPU engines")  # fmt: skip
        if not Path(args.model).expanduser().is_dir():
            parser.error(f"--model {args.model}: no such folder (this script never downloads a model)")
    if args.items < 1:
        parser.error("--items must be at least 1")
    out = args.out or RESULTS / ("vllm_generate_dryrun.json" if args.dry_run else "vllm_generate.json")
    defaults = GenerationConfig()

    with tempfile.TemporaryDirectory(prefix="neggen-bench-vllm-") as tmp:
        tmp = Path(tmp)
        items = demo_items(args.items, tmp / "demo")
        t0 = time.perf_counter()
        if args.dry_run:
            describer = build_engine({"kind": "visual"})
            generator = build_engine({"kind": "catalog"}, catalogue=items)
        else:
            describer = generator = build_engine({
                "kind": "vllm", "model": args.model, "dtype": args.dtype, "max_model_len": args.max_model_len,
                "gpu_memory_utilization": args.gpu_memory_utilization,
            })  # fmt: skip
        load_seconds = time.perf_counter() - t0
        options = {"sampling": defaults.sampling, "batch_size": args.batch_size, "max_attempts": args.attempts,
                   "progress": False}  # fmt: skip
        with GenerationCache(tmp / "cache") as cache:
            t0 = time.perf_counter()
            described = generate_stage(items, "description", describer, cache, **options)
            masked = generate_stage(join_texts(items, described.outputs), "masked", generator, cache, **options)
            negative = generate_stage(join_texts(items, described.outputs, masked.outputs), "negative",
                                      generator, cache, **options)  # fmt: skip
            total_seconds = time.perf_counter() - t0
        describer.close()
        generator.close()

    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "dry_run": args.dry_run,
        "model": None if args.dry_run else describer.model,
        "vllm_config": None if args.dry_run else describer.config.model_dump(mode="json"),
        "engines": {"describer": describer.kind, "generator": generator.kind},
        "fingerprints": {"describer": describer.fingerprint, "generator": generator.fingerprint},
        "vllm_version": vllm_version(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "items": len(items),
        "load_seconds": round(load_seconds, 2),
        "sampling": defaults.sampling.model_dump(),
        "batch_size": args.batch_size,
        "max_attempts": args.attempts,
        "stages": {run.meta["stage"]: stage_summary(run) for run in (described, masked, negative)},
        "end_to_end": {
            "valid_negatives": len(negative.outputs),
            "validity_rate": round(len(negative.outputs) / len(items), 4),
            "seconds": round(total_seconds, 3),
            "items_per_s": round(len(items) / total_seconds, 2) if total_seconds > 0 else None,
        },
    }
    print(f"{'dry run (visual + catalog)' if args.dry_run else summary['model']} on {len(items)} demo items; "
          f"GPU {summary['gpu']}, vLLM {summary['vllm_version']}, model load {summary['load_seconds']} s")  # fmt: skip
    print("| stage | engine | items | items/s | prompt tokens | generated tokens | generated tokens/s | valid | "
          "failures by reason |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for stage, s in summary["stages"].items():
        print(f"| {stage} | {s['engine']} | {s['items']} | {s['items_per_s']} | {s['prompt_tokens'] or '-'} | "
              f"{s['completion_tokens'] or '-'} | {s['completion_tokens_per_s'] or '-'} | {s['valid']}/{s['items']} | "
              f"{s['failures_by_reason'] or '-'} |")  # fmt: skip
    e2e = summary["end_to_end"]
    print(f"end to end: {e2e['valid_negatives']}/{len(items)} valid negatives in {e2e['seconds']} s "
          f"({e2e['items_per_s']} items/s)")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
