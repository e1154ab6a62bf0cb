"""Wall time of the data stage (interactions, items, users through Dagster) per dataset.

Runs `neggen materialize --select 'group:data'` in a fresh NEGGEN_HOME for each dataset
and prints the time of the command and of each asset step (from the run's events).

    .venv/bin/python bench/data_stage.py [--datasets baby beauty ml100k demo]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["baby", "beauty", "ml100k", "demo"])
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'dataset':<10}{'command s':>11}{'interactions s':>16}{'items s':>9}{'users s':>9}")
    for dataset in args.datasets:
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "NEGGEN_HOME": home, "DAGSTER_HOME": str(Path(home) / "dagster")}
            start = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "assets.cli", "materialize", "--dataset", dataset, "--select", "group:data"],
                cwd=REPO, env=env, capture_output=True, text=True,
            )
            seconds = time.perf_counter() - start
        if run.returncode:
            print(f"{dataset:<10} failed: {run.stderr.strip().splitlines()[-1]}")
            continue
        steps = dict(re.findall(r"\] (\w+) done in ([\d.]+)s", run.stderr))
        print(f"{dataset:<10}{seconds:>11.1f}{steps.get('interactions', '-'):>16}{steps.get('items', '-'):>9}{steps.get('users', '-'):>9}")


if __name__ == "__main__":
    main()
