"""`neggen`: materialize datasets, open the Dagster UI, query stages with DuckDB.

    neggen [--config PATH] materialize --dataset NAME [--select SELECTION]
    neggen [--config PATH] generate --dataset NAME [--shard i/N]
    neggen [--config PATH] ui [--host 127.0.0.1] [--port 3000]
    neggen [--config PATH] sql --dataset NAME ["SELECT ..."] [--csv]
    neggen [--config PATH] datasets
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import CONFIG_ENV, CONFIG_FILENAME, ConfigError, NeggenConfig, load_config
from pipeline.generation import Shard

DAGSTER_YAML = """\
# Written by neggen: a local instance, no telemetry, no welcome popup.
telemetry:
  enabled: false
nux:
  enabled: false
"""


def _prepare_environment(config_arg: str | None) -> NeggenConfig:
    """Validate the config, then point Dagster at it and at a local instance folder."""
    config = load_config(config_arg)
    # The file load_config read (--config, else $NEGGEN_CONFIG, else ./neggen.yaml): the assets read it too.
    config_file = Path(config_arg or os.environ.get(CONFIG_ENV) or CONFIG_FILENAME)
    if config_file.exists():
        os.environ[CONFIG_ENV] = str(config_file.resolve())
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or config.home / ".dagster")
    dagster_home.mkdir(parents=True, exist_ok=True)
    settings = dagster_home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(dagster_home.resolve())
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return config


def materialize(config: NeggenConfig, dataset: str, select: str | None) -> int:
    import dagster as dg

    config.dataset(dataset)  # an unknown name fails before Dagster starts
    from assets.definitions import defs
    from assets.progress import root_cause

    graph = defs.resolve_asset_graph()
    try:
        selection = dg.AssetSelection.from_string(select) if select else dg.AssetSelection.all()
        keys = selection.resolve(graph)
    except Exception as err:  # Dagster raises several types for a bad selection string
        print(f"neggen: invalid --select {select!r}: {err}", file=sys.stderr)
        return 2
    if not keys:
        print(f"neggen: --select {select!r} matches no asset", file=sys.stderr)
        return 2
    names = ", ".join(sorted(k.to_user_string() for k in keys))
    print(f"Materializing {names} for dataset `{dataset}` into {config.home / dataset}", file=sys.stderr)
    job = defs.resolve_job_def("materialize_dataset")
    with dg.DagsterInstance.get() as instance:
        _fail_dead_runs(instance)
        result = job.execute_in_process(
            instance=instance,
            partition_key=dataset,
            asset_selection=list(keys),
            run_config={"loggers": {"progress": {"config": {"total_steps": len(keys)}}}},
            raise_on_error=False,
        )
    if result.success:
        print(f"Done: run {result.run_id}", file=sys.stderr)
        return 0
    # A summary from the run's recorded events: it names the cause even where no progress line
    # did (a failure outside a step, such as a resource that could not start).
    causes = dict.fromkeys(
        root_cause(event.event_specific_data.error)
        for event in result.all_events
        if event.is_failure and getattr(event.event_specific_data, "error", None) is not None
    )
    checks = [
        f"check {event.event_specific_data.asset_check_key.name}: FAILED"
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed
    ]
    summary = " | ".join([*checks, *causes]) or "see the run"
    print(f"Failed: run {result.run_id}: {summary} (details: neggen ui)", file=sys.stderr)
    return 1


def generate(config: NeggenConfig, dataset: str, shard: Shard) -> int:
    """The generation stages for one shard of the items, into the dataset's generation cache
    (pipeline/generation.py: generate_shard). It writes no table, so it takes no dataset lock:
    the shards run side by side, and `neggen materialize` then finds their generations cached."""
    from pipeline.generation import generate_shard
    from pipeline.storage import DatasetStore, StageMissing

    generation = config.generation_config(dataset)  # an unknown name fails first
    store = DatasetStore(config.home, dataset)
    print(f"Generating shard {shard} of `{dataset}` into {store.root}", file=sys.stderr)
    try:
        meta = generate_shard(store, generation, shard)
    except StageMissing:
        print(
            f"neggen: `{dataset}` has no items table under {store.root}; "
            f"run: neggen materialize --dataset {dataset} --select '+key:items'",
            file=sys.stderr,
        )
        return 1
    for asset, m in meta.items():
        print(f"{asset}: {m['items']} items, {m['generated']} generated, {m['cache_hits']} cached, "
              f"{m['failed']} failed, {m['seconds']} s", file=sys.stderr)  # fmt: skip
    return 0


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def run_sql(config: NeggenConfig, dataset: str, query: str | None, as_csv: bool) -> int:
    """Query a dataset's stages in a read-only, sandboxed DuckDB (pipeline/duck.py)."""
    import duckdb

    from pipeline.duck import QueryRefused, read_only_stage_connection, run_read_only
    from pipeline.storage import DatasetStore

    config.dataset(dataset)
    store = DatasetStore(config.home, dataset)
    con, views = read_only_stage_connection(store)
    if not views:
        print(
            f"neggen: nothing is materialized for `{dataset}` under {store.root}; "
            f"run: neggen materialize --dataset {dataset}",
            file=sys.stderr,
        )
        return 1
    if query is None:
        query = " UNION ALL ".join(f"SELECT '{v}' AS view, count(*) AS rows FROM {v}" for v in views)
    try:
        relation = run_read_only(con, query)
    except QueryRefused as err:
        example = store.table_path(views[0])
        print(
            f"neggen: refused: {err}. neggen sql is read-only; for a writable DuckDB, run `duckdb` on the "
            f"parquet files directly, e.g. duckdb -c \"SELECT * FROM '{example}' LIMIT 5\"",
            file=sys.stderr,
        )
        return 2
    except duckdb.Error as err:
        print(f"neggen: query failed: {err}", file=sys.stderr)
        return 1
    if relation is None:  # a statement without a result
        return 0
    if as_csv:
        relation.df().to_csv(sys.stdout, index=False)
    else:
        relation.show(max_rows=100, max_width=200)
    return 0


def _fail_dead_runs(instance) -> None:
    """Runs left started by a process that was killed are marked failed (assets/runs.py)."""
    from assets.runs import fail_dead_runs

    for line in fail_dead_runs(instance):
        print(f"neggen: {line}", file=sys.stderr)


# How long Dagster gets to stop its processes after SIGTERM/SIGINT before they are killed.
UI_STOP_GRACE_S = 20.0


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def run_ui(host: str, port: int) -> int:
    """`dagster dev` in its own process group: SIGTERM, SIGINT or SIGHUP to neggen is passed to
    the whole group (webserver, daemon, code servers, runs), and whatever is still alive after
    UI_STOP_GRACE_S is killed, so nothing keeps serving on the port after neggen has gone."""
    import signal
    import time

    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        _fail_dead_runs(instance)
    command = [
        sys.executable, "-m", "dagster", "dev", "-m", "assets.definitions",
        "-h", host, "-p", str(port),
    ]
    print(f"Dagster UI on http://{host}:{port} (Ctrl-C stops it)", file=sys.stderr)
    child = subprocess.Popen(command, start_new_session=True)
    stop_by: list[float] = []

    def forward(signum, frame) -> None:
        _signal_group(child.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        if not stop_by:
            stop_by.append(time.monotonic() + UI_STOP_GRACE_S)

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {signum: signal.signal(signum, forward) for signum in stops}
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop_by and time.monotonic() > stop_by[0]:
                    _signal_group(child.pid, signal.SIGKILL)
    finally:
        # Whatever Dagster left in its group (dagster dev gone, a child still shutting down).
        _signal_group(child.pid, signal.SIGTERM)
        time.sleep(0.5)
        _signal_group(child.pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
            child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if stop_by else code


def list_datasets(config: NeggenConfig) -> int:
    for name, dataset in sorted(config.datasets.items()):
        where = dataset.path if dataset.path else "(generated)"
        print(f"{name}\t{dataset.format}\t{where}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="neggen", description=__doc__.split("\n\n")[0])
    top.add_argument("--config", help=f"config file (default: ./{CONFIG_FILENAME} if present)")
    commands = top.add_subparsers(dest="command", required=True)
    mat = commands.add_parser("materialize", help="materialize assets for one dataset")
    mat.add_argument("--dataset", required=True)
    mat.add_argument("--select", help="Dagster asset selection, e.g. 'interactions+' or 'key:items'")
    gen = commands.add_parser(
        "generate", help="generate descriptions and negatives for one shard of the items into the generation cache"
    )
    gen.add_argument("--dataset", required=True)
    gen.add_argument("--shard", type=_shard, default=Shard(0, 1), metavar="i/N",
                     help="the items with item_id %% N == i (default 0/1: all); run i = 0..N-1 side by side")  # fmt: skip
    ui = commands.add_parser("ui", help="start the Dagster UI")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    sql = commands.add_parser("sql", help="query a dataset's stages with DuckDB")
    sql.add_argument("--dataset", required=True)
    sql.add_argument("query", nargs="?", help="SQL; without it, list the views and row counts")
    sql.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    commands.add_parser("datasets", help="list registered datasets")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = _prepare_environment(args.config)
        if args.command == "materialize":
            return materialize(config, args.dataset, args.select)
        if args.command == "generate":
            return generate(config, args.dataset, args.shard)
        if args.command == "sql":
            return run_sql(config, args.dataset, args.query, args.csv)
        if args.command == "ui":
            return run_ui(args.host, args.port)
        return list_datasets(config)
    except ConfigError as err:
        print(f"neggen: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
