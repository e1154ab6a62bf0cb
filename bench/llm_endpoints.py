"""Throughput of the `openai` engine over one server vs two, each of a bounded capacity.

Local OpenAI-compatible servers on 127.0.0.1 (pipeline.llm.testing.FakeServer) model a real
one's capacity: each serves at most `--slots` requests at a time, `--latency-s` each (more
requests queue). The same Attribute Masking requests (structured prompt mode, the demo items'
metadata descriptions; the servers answer the first two maskable words) run through
`generate_stage` with one attempt per item and no cache, over:

* 1 server;
* 2 servers (`base_url` a list of both);
* 2 servers of which the first is down (a closed port): every request it is given costs one
  refused connection, then goes to the other.

It prints (and writes to bench/results/llm_endpoints.md) items/s per setup, the 2-vs-1 ratio
measured in this run, how the requests were spread, and whether every setup wrote the same
texts as the single server.

    .venv/bin/python bench/llm_endpoints.py [--items 400] [--latency-s 0.1] [--slots 4] [--max-concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import Report  # noqa: E402
from pipeline.demo import DemoConfig, write_demo_source  # noqa: E402
from pipeline.llm.engines import build_engine  # noqa: E402
from pipeline.llm.prompts import build_description  # noqa: E402
from pipeline.llm.run import SOURCE_COLUMN, generate_stage  # noqa: E402
from pipeline.llm.testing import FakeServer, completion  # noqa: E402
from pipeline.sources import read_amazon2014  # noqa: E402

RESULTS = REPO / "bench" / "results" / "llm_endpoints.md"


def capacity_plan(slots: int, latency_s: float):
    """A server plan serving `slots` requests at a time, `latency_s` each; it masks the first
    two words the request's schema allows."""
    busy = threading.Semaphore(slots)

    def plan(n, body, headers):
        words = body["response_format"]["json_schema"]["schema"]["properties"]["mask"]["items"]["enum"]
        with busy:
            time.sleep(latency_s)
        return 200, completion(json.dumps({"mask": words[:2]})), 0

    return plan


def run(items, urls: list[str], max_concurrency: int) -> dict:
    config = {"kind": "openai", "base_url": urls, "model": "bench-model", "max_concurrency": max_concurrency,
              "max_retries": 2, "backoff_s": 1.0, "timeout_s": 30.0}  # fmt: skip
    with build_engine(config) as engine:
        stage = generate_stage(items, "masked", engine, progress=False, max_attempts=1, prompt_mode="structured")
    meta = stage.meta
    return {"seconds": meta["seconds"], "items_per_s": meta["items"] / meta["seconds"], "ok": meta["ok"],
            "texts": stage.outputs.sort_values("item_id").text.tolist()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=400, help="demo items (one masking request each)")
    parser.add_argument("--latency-s", type=float, default=0.1, help="each server's time per request")
    parser.add_argument("--slots", type=int, default=4, help="requests each server serves at a time")
    parser.add_argument("--max-concurrency", type=int, default=8, help="the engine's requests in flight per server")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="neggen-bench-endpoints-") as tmp:
        source = write_demo_source(Path(tmp), DemoConfig(seed=0, n_users=max(50, args.items), n_items=args.items))
        items = read_amazon2014(source).items.rename(columns={"item_source": "item_id"})
    items[SOURCE_COLUMN] = [build_description(None, r.title, r.brand, r.categories, r.description)
                            for r in items.itertuples()]  # fmt: skip

    def server() -> FakeServer:
        return FakeServer(capacity_plan(args.slots, args.latency_s))

    with server() as down:
        closed = down.url  # nothing listens there once the server has stopped
    rows = []
    with server() as first:
        rows.append(("1 server", run(items, [first.url], args.max_concurrency), [first.count]))
    with server() as first, server() as second:
        rows.append(("2 servers", run(items, [first.url, second.url], args.max_concurrency),
                     [first.count, second.count]))  # fmt: skip
    with server() as second:
        rows.append(("2 servers, the first down", run(items, [closed, second.url], args.max_concurrency),
                     ["refused", second.count]))  # fmt: skip

    single = rows[0][1]
    ratio = rows[1][1]["items_per_s"] / single["items_per_s"]
    report = Report()
    say = report.say

    say(f"# The openai engine over 1 vs 2 servers ({time.strftime('%Y-%m-%d')})")
    say()
    say(f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}; "
        f"servers: local fakes on 127.0.0.1, {args.slots} requests at a time each, {args.latency_s:g} s per "
        f"request (capacity {args.slots / args.latency_s:g} requests/s per server); engine: max_concurrency "
        f"{args.max_concurrency} per server; {len(items)} demo items, one Attribute Masking request each "
        "(structured mode), one attempt, no cache")  # fmt: skip
    say()
    say("| servers | seconds | items/s | requests per server | valid | same texts as 1 server |")
    say("|---|---:|---:|---|---:|---|")
    for name, result, counts in rows:
        same = "yes" if result["texts"] == single["texts"] else "NO"
        say(f"| {name} | {result['seconds']:.2f} | {result['items_per_s']:.1f} | {' / '.join(map(str, counts))} | "
            f"{result['ok']}/{len(items)} | {same} |")  # fmt: skip
    say()
    say(f"2 servers vs 1: {ratio:.2f}x items/s (measured in this run)")
    report.write(RESULTS)
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
