"""Atomic file writes: a reader sees the old file or the new one, never part of one.

Every file written for others to read (stage tables, checkpoints, run records, the demo's
source files) goes through `atomic_path`: it is written to a temporary file beside its target
and renamed over it. The temporary name is unique to the call, so two writers of one file never
rename each other's temporary file away. `durable` also fsyncs the file before the rename, so
it survives a crash of the machine, not only of the process. It lives in the learning library,
the lowest layer, so that the stage library and the learning library share it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMPORARY_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; when the block ends, the file is
    renamed over `path` (fsynced first if `durable`). If the block raises, it is removed and
    `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, payload: Any, durable: bool = True) -> None:
    """`payload` as indented JSON with a final newline (the same payload gives the same bytes)."""
    write_bytes(path, (json.dumps(payload, indent=1) + "\n").encode(), durable)
