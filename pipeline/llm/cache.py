"""A content-addressed cache of generations, durable per batch.

Key = sha256 over (template name and version, engine kind, engine fingerprint, sampling
parameters, input digest: message texts, image bytes, fields, context). So re-running
regenerates exactly what changed, and nothing else.

Storage: one SQLite database (`generations.sqlite`) in WAL mode under the given folder
(`DurableStore`, which the embedding cache in `pipeline/encoding.py` shares). `put`/`put_many`
commit before returning, with `synchronous=FULL` (the WAL is fsynced at each commit), so a
process killed at any point loses nothing it already stored. Readers in other processes see
every committed generation and never block the writer. Only successful generations are
stored (an engine error is worth retrying next time).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.llm.engines.base import Engine
from pipeline.llm.types import Request, Result

FILENAME = "generations.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    engine TEXT NOT NULL,
    model TEXT NOT NULL,
    finish_reason TEXT,
    latency_s REAL,
    template TEXT,
    created_at REAL NOT NULL
)
"""
_CHUNK = 500  # keys per SELECT (SQLite's parameter limit is far above)


def cache_key(request: Request, engine: Engine) -> str:
    """The content address of `request` answered by `engine`."""
    payload = {
        "template": request.template,
        "template_version": request.template_version,
        "engine": engine.kind,
        "model": engine.fingerprint,
        "sampling": request.sampling.model_dump(mode="json"),
        "input": request.content_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class DurableStore:
    """A SQLite database in WAL mode whose every write is committed and fsynced on return.

    The crash-safe core of the content-addressed caches: rows are looked up by a `key TEXT
    PRIMARY KEY` column; `schema` creates the table(s). Thread-safe (one connection, a lock).
    """

    def __init__(self, path: str | Path, schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute(schema)

    def select_keys(self, table: str, columns: str, keys: Sequence[str]) -> list[tuple]:
        """`SELECT key, <columns>` of the rows whose key is in `keys` (absent keys are left out)."""
        rows: list[tuple] = []
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows += self._con.execute(f"SELECT key, {columns} FROM {table} WHERE key IN ({marks})", chunk).fetchall()
        return rows

    def insert_many(self, table: str, rows: Sequence[tuple]) -> int:
        """Insert (or replace) `rows` in one transaction, committed (and fsynced) on return."""
        if not rows:
            return 0
        marks = ",".join("?" * len(rows[0]))
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._con.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return len(rows)

    def count(self, table: str) -> int:
        with self._lock:
            return self._con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GenerationCache(DurableStore):
    """`get_many(keys)` → {key: Result} for the keys present; `put(key, result)`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        super().__init__(self.folder / FILENAME, _SCHEMA)
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"GenerationCache({str(self.folder)!r}, hits={self.hits}, misses={self.misses})"

    def key(self, request: Request, engine: Engine) -> str:
        return cache_key(request, engine)

    def get_many(self, keys: Sequence[str]) -> dict[str, Result]:
        """Stored results of `keys` (absent keys are left out); counts hits and misses."""
        rows = self.select_keys("generations", "text, engine, model, finish_reason, latency_s", keys)
        found = {
            key: Result(text=text, engine=engine, model=model, finish_reason=finish, latency_s=latency or 0.0, tries=0)
            for key, text, engine, model, finish, latency in rows
        }
        with self._lock:
            self.hits += sum(1 for k in keys if k in found)
            self.misses += sum(1 for k in keys if k not in found)
        return found

    def get(self, key: str) -> Result | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, result: Result, template: str | None = None) -> None:
        self.put_many([(key, result, template)])

    def put_many(self, entries: Iterable[tuple[str, Result] | tuple[str, Result, str | None]]) -> int:
        """Store the successful results in one transaction, committed (and fsynced) on return."""
        rows = []
        now = time.time()
        for entry in entries:
            key, result = entry[0], entry[1]
            template = entry[2] if len(entry) > 2 else None
            if result.ok:
                rows.append((key, result.text, result.engine, result.model, result.finish_reason,
                             result.latency_s, template, now))  # fmt: skip
        return self.insert_many("generations", rows)

    def __len__(self) -> int:
        return self.count("generations")
