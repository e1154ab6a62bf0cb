"""Validity of masks and completions per engine and prompt mode, on the demo and MovieLens.

For each dataset: the first `--items` items (by item id) of `<home>/<dataset>/items.parquet`
(the data stage's output: `neggen materialize --dataset NAME --select 'group:data'`), their
§3.2.1 descriptions from the `visual` describer (MovieLens has no pictures: metadata only),
then

* `catalog` (no LLM, the CPU default): masks, and completions of its own masks;
* each engine of `--engines` on the packaged SmolLM2-135M-Instruct: `transformers`, `vllm`
  (in-process, vLLM's CPU build: `bash scripts/install.sh --vllm`) and `openai` (against a
  `vllm serve` of the same model that the script starts on 127.0.0.1 and stops);
  `structured`: masks, and completions of its own valid masks (the pipeline's path);
* on the first `--side-items` of them (a smaller sample: SmolLM2 writes about 0.1-0.4 items/s
  on one core through `transformers`): `free_text` (the paper's prompts) masks and completions
  of the catalogue's masks (its own masks are not valid), and `structured` completions of the
  same catalogue masks and direct negatives.

Each through `generate_stage` with a fresh cache, the pipeline's default sampling
(temperature 0.7, top-p 0.95, max_tokens 256) and `--max-attempts` tries per item
(`--free-text-attempts` for free text: its outputs are not valid whatever the seed, and each
try is minutes). Valid = passes `pipeline.llm.validate` after the tries. For completions,
what validity does not say: the hardness (mean token Jaccard of positive and negative, as in
the stage's metadata), and the share of filled-in values that are the hidden word itself or a
label word of the prompt ("Title", "Categories", ...; small models copy them). Prints and
writes `--out` with `.md` and `.json` (default `bench/results/llm_structured`: the README's table).
Stage batches: `--batch-size` for `transformers` (also its decoding batch), the pipeline's
default (64) for `vllm` and `openai` (vLLM schedules the requests of a batch together).

    NEGGEN_HOME=/tmp/some-home .venv/bin/python bench/llm_structured.py [--items 150] [--datasets demo ml100k]
    NEGGEN_HOME=/tmp/some-home .venv/bin/python bench/llm_structured.py --engines vllm openai \
        --out bench/results/llm_structured_vllm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import Report  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.config.generation import GenerationConfig  # noqa: E402
from pipeline.llm.cache import GenerationCache  # noqa: E402
from pipeline.llm.engines import build_engine  # noqa: E402
from pipeline.llm.prompts import MASK, TOKEN_PATTERN  # noqa: E402
from pipeline.llm.run import generate_stage, join_texts  # noqa: E402
from pipeline.llm.types import SamplingParams  # noqa: E402

RESULTS = REPO / "bench" / "results" / "llm_structured"
_LABEL = re.compile(r"(\w+) ?:(?:\s|$)")


def filled_values(masked: str, text: str) -> list[str] | None:
    """The values standing where `masked` has [MASK] in `text` (None when they do not align)."""
    pattern = "(.*?)".join(re.escape(part) for part in masked.split(MASK))
    match = re.fullmatch(pattern, text, re.S)
    return list(match.groups()) if match else None


def value_quality(items, outputs) -> dict:
    """Of the values a completion filled in: the share equal to the hidden word (the source's
    text at that place) and the share made only of label words of the prompt, case-insensitive."""
    frame = outputs.merge(items[["item_id", "description_text", "masked_text"]], on="item_id")
    same = label = total = 0
    for row in frame.itertuples():
        values, hidden = filled_values(row.masked_text, row.text), filled_values(row.masked_text, row.description_text)
        if values is None or hidden is None:
            continue
        labels = {w.lower() for w in _LABEL.findall(row.description_text)} | {"mask", "masks"}
        for value, original in zip(values, hidden):
            words = [w.lower() for w in TOKEN_PATTERN.findall(value)]
            total += 1
            same += value.strip().lower() == original.strip().lower()
            label += bool(words) and all(w in labels for w in words)
    return {"values": total, "same_as_hidden": round(same / total, 3) if total else None,
            "label_word": round(label / total, 3) if total else None}  # fmt: skip


def run_stage(label: dict, items, stage, engine, cache_dir: Path, **kwargs) -> dict:
    t0 = time.perf_counter()
    run = generate_stage(items, stage, engine, GenerationCache(cache_dir), progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    out, n = run.outputs, len(items)
    reasons = run.failures["reason"].str.replace(r"\d+(\.\d+)?", "N", regex=True).str.slice(0, 90).value_counts()
    similarity = run.meta.get("similarity") or {}
    row = {
        **label, "stage": stage, "items": n, "valid": len(out), "valid_first_try": int((out["attempts"] == 1).sum()),
        "seconds": round(seconds, 1), "items_per_s": round(n / seconds, 3) if seconds else None,
        "failure_reasons": reasons.head(4).to_dict(), "examples": out["text"].head(2).tolist(),
        "hardness": round(similarity["mean"], 3) if similarity else None,
        "values": value_quality(items, out) if stage == "negative" and len(out) else None, "run": run,
    }  # fmt: skip
    print(f"  {label['engine']:>12} {label['mode']:>10} {stage:>8} {label.get('input', ''):>16}: "
          f"{row['valid']}/{n} valid ({row['valid_first_try']} first try) in {seconds:.0f}s", flush=True)  # fmt: skip
    return row


def pct(valid: int, items: int) -> str:
    return f"{100 * valid / items:.0f}% ({valid}/{items})" if items else "n/a"


def llm_engines(names: list[str], args, stack: contextlib.ExitStack) -> dict[str, tuple]:
    """name -> (engine, stage batch size, seconds to start) for each of `names`, closed by `stack`."""
    engines = {}
    for name in names:
        t0 = time.perf_counter()
        if name == "transformers":
            config = {"kind": "transformers", "device": "cpu", "threads": 1, "batch_size": args.batch_size}
            if args.converted_dir:
                config["converted_dir"] = args.converted_dir
            batch_size = args.batch_size
        else:
            from pipeline.llm.engines.transformers_engine import packaged_model_folder
            from pipeline.llm.testing import VLLMServer

            folder = packaged_model_folder(args.converted_dir)
            batch_size = GenerationConfig().batch_size
            if name == "vllm":
                config = {"kind": "vllm", "model": str(folder), "max_model_len": 2048}
            else:
                logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="neggen-vllm-serve-")))
                server = stack.enter_context(VLLMServer(folder, logs))
                # 32 in flight: vLLM batches what it has, as the in-process engine's 64-request calls
                config = {"kind": "openai", "base_url": server.url, "model": server.name, "max_concurrency": 32}
        engines[name] = (stack.enter_context(build_engine(config)), batch_size, time.perf_counter() - t0)
        print(f"{name}: ready in {engines[name][2]:.0f}s", flush=True)
    return engines


def describe(name: str, llm, start_s: float, args) -> str:
    """One engine's settings, for the report's header."""
    if name == "transformers":
        return f"transformers engine: {llm.model}, 1 thread, float32, batch {args.batch_size}"
    if name == "vllm":
        return (f"vllm engine: {llm.model} in-process (vLLM {llm.vllm_version}, {llm.device}, {llm.dtype}, KV cache "
                f"1 GiB, guidance backend, started in {start_s:.0f}s), batch 64")  # fmt: skip
    return (f"openai engine: a `vllm serve` of {llm.model} on 127.0.0.1 (--enforce-eager, --no-enable-chunked-prefill, guidance backend; ready in {start_s:.0f}s), "
            f"{llm.config.max_concurrency} requests in flight, batch 64")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("NEGGEN_HOME", REPO / "neggen_home")))
    parser.add_argument("--datasets", nargs="+", default=["demo", "ml100k"])
    parser.add_argument("--engines", nargs="+", choices=["transformers", "vllm", "openai"], default=["transformers"],
                        help="LLM engines on the packaged SmolLM2 (openai: against a vllm serve started here)")
    parser.add_argument("--items", type=int, default=150, help="items for masks and completions of own masks")
    parser.add_argument("--side-items", type=int, default=48, help="items for free text, catalogue masks, direct")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--free-text-attempts", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers engine batch")
    parser.add_argument("--converted-dir", default=None, help="where the converted SmolLM2 lives (engine default)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix (.md, .json)")
    args = parser.parse_args()

    import torch
    import transformers

    sampling = SamplingParams()
    rows: list[dict] = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        llms = llm_engines(args.engines, args, stack)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="neggen-bench-structured-"))
        for dataset in args.datasets:
            path = args.home / dataset / "items.parquet"
            if not path.exists():
                sys.exit(f"{path} not found: run `NEGGEN_HOME={args.home} neggen materialize --dataset {dataset} "
                         "--select 'group:data'` first")  # fmt: skip
            items = pd.read_parquet(path).sort_values("item_id").head(args.items)
            print(f"{dataset}: {len(items)} items", flush=True)
            cache = Path(tmp) / dataset
            base = {"dataset": dataset}
            described = join_texts(items, generate_stage(items, "description", build_engine({"kind": "visual"}),
                                                         progress=False).outputs)  # fmt: skip
            catalog = build_engine({"kind": "catalog"}, catalogue=items)
            label = {**base, "engine": "catalog", "mode": "-"}
            masks = run_stage(label, described, "masked", catalog, cache / "catalog")
            catalog_masked = join_texts(described, masked=masks["run"].outputs)
            rows += [masks, run_stage({**label, "input": "own masks"}, catalog_masked, "negative", catalog, cache / "catalog")]

            for name, (llm, batch_size, _) in llms.items():
                llm_kwargs = {"sampling": sampling, "batch_size": batch_size}
                label = {**base, "engine": name, "mode": "structured"}
                structured = {**llm_kwargs, "max_attempts": args.max_attempts, "prompt_mode": "structured"}
                own = run_stage(label, described, "masked", llm, cache / name, **structured)
                own_masked = join_texts(described, masked=own["run"].outputs)
                rows += [own, run_stage({**label, "input": "own masks"}, own_masked, "negative", llm, cache / name,
                                        **structured)]  # fmt: skip

                side = catalog_masked.head(args.side_items)
                free_label = {**base, "engine": name, "mode": "free_text"}
                free = {**llm_kwargs, "max_attempts": args.free_text_attempts}
                rows.append(run_stage(free_label, side, "masked", llm, cache / name, **free))
                rows.append(run_stage({**free_label, "input": "catalogue masks"}, side, "negative", llm, cache / name, **free))
                rows.append(run_stage({**label, "input": "catalogue masks"}, side, "negative", llm, cache / name, **structured))
                rows.append(run_stage(label, side, "direct", llm, cache / name, **structured))
        described_engines = {name: describe(name, llm, start_s, args) for name, (llm, _, start_s) in llms.items()}
    total = time.perf_counter() - started

    def find(dataset, engine, mode, stage, source=None):
        return next((r for r in rows if (r["dataset"], r["engine"], r["mode"], r["stage"]) == (dataset, engine, mode, stage)
                     and (source is None or r.get("input") == source)), None)  # fmt: skip

    report = Report()
    say = report.say

    say(f"# Validity per engine and prompt mode ({time.strftime('%Y-%m-%d')})")
    say()
    say(f"machine: {platform.machine()}, {os.cpu_count()} cores (one used, shared), torch {torch.__version__}, "
        f"transformers {transformers.__version__}; {'; '.join(described_engines.values())}; sampling: temperature "
        f"{sampling.temperature}, top-p {sampling.top_p}, max_tokens {sampling.max_tokens}; tries per item: "
        f"structured {args.max_attempts}, free text {args.free_text_attempts}; total {total / 60:.0f} min")  # fmt: skip
    say()
    say(f"Samples: the first {args.items} items of each dataset (masks, completions of own masks); the first "
        f"{args.side_items} of them for free text, completions of the catalogue's masks and direct negatives.")
    say()
    say("| engine | mode | dataset | valid masks | valid completions (own masks) | "
        "valid completions (catalogue masks) | valid direct negatives |")
    say("|---|---|---|---:|---:|---:|---:|")
    for dataset in args.datasets:
        for engine, mode in (("catalog", "-"), *((e, m) for e in args.engines for m in ("free_text", "structured"))):
            masked = find(dataset, engine, mode, "masked")
            own = find(dataset, engine, mode, "negative", "own masks")
            cat = find(dataset, engine, mode, "negative", "catalogue masks") or (own if engine == "catalog" else None)
            direct = find(dataset, engine, mode, "direct")
            own_cell = pct(own["valid"], masked["items"]) if own else "n/a: no valid masks" if not masked["valid"] else "-"
            say(f"| {engine} | {mode} | {dataset} | {pct(masked['valid'], masked['items'])} | "
                f"{own_cell} | {pct(cat['valid'], cat['items']) if cat else '-'} | "
                f"{pct(direct['valid'], direct['items']) if direct else '-'} |")  # fmt: skip
    say()
    say("Completions of own masks are counted over all items (an item whose mask failed has no completion).")
    say()
    say("Per stage. Hardness: mean token Jaccard of positive and negative (1 = unchanged). Values: of the "
        "values a completion filled in, the share that are the hidden word itself, and the share made only of "
        "label words of the prompt (Title, Categories, ...).")
    say()
    say("| dataset | engine | mode | stage | input | valid | first try | seconds | items/s | hardness | "
        "values = hidden word | values = label words | failure reasons |")
    say("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        reasons = "; ".join(f"{k} ({v})" for k, v in r["failure_reasons"].items()) or "-"
        values = r["values"] or {}
        shares = [f"{100 * values[key]:.0f}%" if values.get(key) is not None else "-" for key in ("same_as_hidden", "label_word")]
        say(f"| {r['dataset']} | {r['engine']} | {r['mode']} | {r['stage']} | {r.get('input', '-')} | "
            f"{r['valid']}/{r['items']} | {r['valid_first_try']} | {r['seconds']} | {r['items_per_s']} | "
            f"{r['hardness'] if r['hardness'] is not None else '-'} | {shares[0]} | {shares[1]} | {reasons} |")  # fmt: skip
    say()
    say("Examples (first two valid outputs of each SmolLM2 structured stage):")
    for r in rows:
        if r["mode"] == "structured":
            for text in r["examples"]:
                say(f"- {r['dataset']} {r['engine']} {r['stage']} ({r.get('input', '-')}): `{text[:240].replace(chr(10), ' | ')}`")
    out = args.out.resolve()
    report.write(out.with_suffix(".md"))
    out.with_suffix(".json").write_text(json.dumps(
        {"items": args.items, "datasets": args.datasets, "engines": described_engines, "minutes": round(total / 60, 1),
         "rows": [{k: v for k, v in r.items() if k != "run"} for r in rows]}, indent=1))  # fmt: skip
    print(f"\nwritten to {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
