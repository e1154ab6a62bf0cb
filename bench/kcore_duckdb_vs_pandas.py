"""k-core filtering: the pipeline's DuckDB implementation versus plain pandas, same input.

Both run the same iterative rule to a fixpoint; the script checks they keep the same
rows and prints the time ratio measured in this one run.

    .venv/bin/python bench/kcore_duckdb_vs_pandas.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.datastage import deduplicate_and_kcore
from pipeline.duck import connect
from pipeline.sources import read_source

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def pandas_kcore(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Deduplicate, then the same rounds as sql/kcore_round.sql, to a fixpoint."""
    frame = frame.drop_duplicates(["user_source", "item_source"])
    while True:
        user_degree = frame.groupby("user_source")["item_source"].transform("size")
        item_degree = frame.groupby("item_source")["user_source"].transform("size")
        kept = frame[(user_degree >= k) & (item_degree >= k)]
        if len(kept) == len(frame):
            return kept
        frame = kept


def duckdb_kcore(frame: pd.DataFrame, k: int) -> tuple[pd.DataFrame, int]:
    con = connect()
    final, rounds = deduplicate_and_kcore(con, frame, k)
    kept = con.sql(
        f"SELECT user_source, item_source FROM {final} JOIN user_codes USING (u) JOIN item_codes USING (i)"
    ).df()
    return kept, len(rounds) - 1


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    """Zipf-distributed users and items, like real catalogues: k-core needs many rounds."""
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.3, n) % (n // 5)
    items = rng.zipf(1.2, n) % (n // 13)
    return pd.DataFrame({"user_source": users.astype(str), "item_source": items.astype(str)})


def timed(fn, repeat: int):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--synthetic", type=int, nargs="*", default=[2_000_000, 20_000_000],
                        help="sizes of the synthetic Zipf inputs (draws, before deduplication)")
    args = parser.parse_args()
    inputs = [(f"synthetic {n / 1e6:g}M draws", synthetic(n), 5) for n in args.synthetic]
    for name, fmt, path, k in [("beauty", "mmrec", SHARED / "amazon2014" / "beauty", 10),
                               ("ml-100k", "recbole", SHARED / "movielens-100k", 20)]:
        if path.exists():
            raw = read_source(fmt, path).interactions[["user_source", "item_source"]]
            inputs.append((name, raw, k))
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; best of {args.repeat}")
    print(f"{'input':<22}{'rows':>10}{'k':>4}{'kept':>10}{'rounds':>8}{'duckdb s':>10}{'pandas s':>10}{'pandas/duckdb':>15}")
    for name, frame, k in inputs:
        frame = frame.assign(rating=np.nan, timestamp=pd.array([pd.NA] * len(frame), dtype="Int64"),
                             x_label=pd.array([pd.NA] * len(frame), dtype="Int8"))
        duck_s, (duck_rows, rounds) = timed(lambda: duckdb_kcore(frame, k), args.repeat)
        pandas_s, pandas_rows = timed(lambda: pandas_kcore(frame[["user_source", "item_source"]], k), args.repeat)
        same = set(map(tuple, duck_rows.to_numpy())) == set(map(tuple, pandas_rows.to_numpy()))
        assert same, f"{name}: DuckDB and pandas keep different rows"
        print(f"{name:<22}{len(frame):>10,}{k:>4}{len(duck_rows):>10,}{rounds:>8}{duck_s:>10.2f}{pandas_s:>10.2f}{pandas_s / duck_s:>14.1f}x")


if __name__ == "__main__":
    main()
