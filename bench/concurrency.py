"""Two dataset runs at once against one alone: the wall time of `neggen materialize` for one
demo dataset, then for two demo-format datasets started together (two processes, one home),
and the ratio of the two (issue 14 asks for at most 2.2x; before compute slots, two trainings
side by side made a LightGCN epoch about 12x slower on 2 cores).

Both datasets are the same world (one demo config) under two names, so the two runs do the
same work. Every measurement starts from an empty home: the content caches would otherwise skip
the work a run repeats. `--concurrent-runs` is the config's `compute.concurrent_runs` (runs
that encode or train at once; each gets usable cores // N torch threads). The default selection
is the data stage, the generation stages, the embedding stores and LightGCN (`base_model`).
A step's seconds include its wait for a compute slot.

    .venv/bin/python bench/concurrency.py [--concurrent-runs 1] [--users 1500 --items 1000] [--select ...]

Measure on otherwise idle cores: the ratio is only meaningful when nothing else competes.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import Report  # noqa: E402
DATASETS = ("demo", "demo_b")
SELECTION = "+key:base_model or +key:text_embeddings or +key:image_embeddings"


def write_config(folder: Path, users: int, items: int, concurrent_runs: int) -> Path:
    world = f"{{format: demo, demo: {{n_users: {users}, n_items: {items}}}}}"
    config = folder / "neggen.yaml"
    config.write_text(
        "home: home\n"
        f"compute: {{concurrent_runs: {concurrent_runs}}}\n"
        "datasets:\n" + "".join(f"  {name}: {world}\n" for name in DATASETS)
    )
    return config


def materialize(config: Path, datasets: tuple[str, ...], select: str) -> dict[str, dict]:
    """Run `neggen materialize` for each dataset at once, in a fresh home; per dataset: its wall
    seconds and the seconds of each step (from the progress lines)."""
    home = config.parent / "home"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(config.parent / "dagster")}
    env.pop("NEGGEN_HOME", None)  # the config's home
    env.pop("NEGGEN_CONFIG", None)
    for folder in (home, config.parent / "dagster"):
        shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    runs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "assets.cli", "--config", str(config), "materialize", "--dataset", name,
             "--select", select],
            cwd=config.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for name in datasets
    }
    out = {}
    for name, run in runs.items():
        _, err = run.communicate()
        seconds = time.perf_counter() - started
        if run.returncode:
            sys.exit(f"{name} failed:\n{err[-3000:]}")
        steps = {step: float(s) for step, s in re.findall(r"\] (\w+) done in ([\d.]+)s", err)}
        waited = "waiting for a compute slot" in err
        out[name] = {"seconds": seconds, "steps": steps, "waited": waited}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent-runs", type=int, default=1, help="compute.concurrent_runs (default 1)")
    parser.add_argument("--users", type=int, default=1500, help="demo world users (default: the built-in demo's)")
    parser.add_argument("--items", type=int, default=1000, help="demo world items (default: the built-in demo's)")
    parser.add_argument("--select", default=SELECTION, help=f"asset selection (default: {SELECTION!r})")
    args = parser.parse_args()
    report = Report()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    report.say(f"{time.strftime('%Y-%m-%d')}; machine: {platform.machine()}, {cores} usable cores, Python {platform.python_version()}; "
          f"demo {args.users} users x {args.items} items; compute.concurrent_runs {args.concurrent_runs}; "
          f"select {args.select!r}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="neggen-concurrency-") as folder:
        config = write_config(Path(folder), args.users, args.items, args.concurrent_runs)
        alone = materialize(config, DATASETS[:1], args.select)[DATASETS[0]]
        together = materialize(config, DATASETS, args.select)
    both = max(run["seconds"] for run in together.values())
    report.say(f"{'run':<22}{'wall s':>9}{'base_model s':>14}{'text_embeddings s':>19}  waited for a slot")
    rows = [("demo alone", alone)] + [(f"{name} (two at once)", run) for name, run in together.items()]
    for label, run in rows:
        steps = run["steps"]
        report.say(f"{label:<22}{run['seconds']:>9.1f}{steps.get('base_model', float('nan')):>14.1f}"
              f"{steps.get('text_embeddings', float('nan')):>19.1f}  {'yes' if run['waited'] else 'no'}")  # fmt: skip
    report.say(f"two at once / one alone: {both:.1f} s / {alone['seconds']:.1f} s = {both / alone['seconds']:.2f}x "
          "(target: at most 2.2x)")  # fmt: skip
    report.write(REPO / "bench" / "results" / f"concurrency_{args.concurrent_runs}.md")


if __name__ == "__main__":
    main()
