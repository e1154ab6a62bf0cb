"""DuckDB helpers: SQL from the `sql/` folder, stage views, arrow results, and the sandboxed
read-only connection of `neggen sql`.

DuckDB 2.x: results come back through `con.sql(q).to_arrow_table()` / `.df()`.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import duckdb

from pipeline.storage import DatasetStore

_BLOCK = re.compile(r"^--\s*(name|requires):\s*(.+)$", re.MULTILINE)


def sql_text(filename: str, **params) -> str:
    """A file from `sql/` with `{placeholders}` filled in."""
    text = resources.files("sql").joinpath(filename).read_text()
    return text.format(**params) if params else text


def sql_blocks(filename: str, marker: str = "name") -> list[tuple[str, str]]:
    """Split a file into (marker value, statement) blocks at `-- name:` / `-- requires:` lines."""
    text = sql_text(filename)
    found = [m for m in _BLOCK.finditer(text) if m.group(1) == marker]
    blocks = []
    for index, match in enumerate(found):
        end = found[index + 1].start() if index + 1 < len(found) else len(text)
        blocks.append((match.group(2).strip(), text[match.end():end].strip()))
    return blocks


def named_query(filename: str, name: str, **params) -> str:
    for block_name, statement in sql_blocks(filename):
        if block_name == name:
            return statement.format(**params) if params else statement
    raise KeyError(f"no `-- name: {name}` block in sql/{filename}")


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _quote_path(path: Path) -> str:
    return str(path).replace("'", "''")


def create_stage_view(con: duckdb.DuckDBPyConnection, stage: str, path: Path) -> None:
    con.execute(sql_text("stage_view.sql", stage=stage, path=_quote_path(path)))


def attach_stage_views(con: duckdb.DuckDBPyConnection, store: DatasetStore) -> list[str]:
    """A view per materialized stage (named after its asset) plus the inspection views
    whose stages exist. Returns the names of the views created."""
    stages = store.existing_tables()
    for stage, path in stages.items():
        create_stage_view(con, stage, path)
    created = list(stages)
    for requires, statement in sql_blocks("inspect_views.sql", marker="requires"):
        needed = {name.strip() for name in requires.split(",")}
        if needed <= set(stages):
            con.execute(statement)
            created.append(re.search(r"VIEW\s+(\w+)", statement).group(1))
    return created


# --------------------------------------------------------------------------- neggen sql


class QueryRefused(ValueError):
    """A statement `neggen sql` does not run: it reads the stage views and nothing else."""


# Statement kinds that only read: SELECT (with DESCRIBE, SHOW, SUMMARIZE, FROM-first), EXPLAIN,
# and MULTI (what PIVOT is made of). COPY, ATTACH, INSTALL/LOAD, EXPORT, SET, CALL, PRAGMA,
# CREATE, INSERT, UPDATE, ... are refused before DuckDB sees them.
READ_ONLY_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "MULTI"})


def read_only_stage_connection(store: DatasetStore) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with the stage and inspection views of `store`, sandboxed: no
    extension is installed or loaded, and external access is off (no file, URL or Python
    object is reachable except the stages' parquet files, which the views read), with the
    configuration locked so that a query cannot turn it back on. Run queries through
    `run_read_only` (statements that write or attach are refused before DuckDB sees them)."""
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "allow_community_extensions": False,
    })  # fmt: skip
    views = attach_stage_views(con, store)
    files = [str(path) for path in store.existing_tables().values()]
    # The only files reachable once external access is off (set before: DuckDB refuses after).
    con.execute("SET allowed_paths = $files", {"files": files})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con, views


def refuse_writes(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise QueryRefused unless every statement of `query` only reads."""
    for statement in con.extract_statements(query):
        kind = statement.type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise QueryRefused(f"{kind} statements are refused: neggen sql only reads the stage views")


def run_read_only(con: duckdb.DuckDBPyConnection, query: str):
    """`con.sql(query)` after refuse_writes; DuckDB's own refusals (a file or URL the sandbox
    does not reach) come back as QueryRefused too."""
    refuse_writes(con, query)
    try:
        return con.sql(query)
    except duckdb.PermissionException as err:
        raise QueryRefused(" ".join(str(err).split())) from None
