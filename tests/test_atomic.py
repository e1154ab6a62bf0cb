"""The one atomic-write helper (neggen_model/atomic.py) that tables, checkpoints, run records,
reports and the demo source are written through."""

from __future__ import annotations

import json

import pytest

from neggen_model.atomic import atomic_path, write_bytes, write_json


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "table.parquet"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("the writer crashed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_finished_write_replaces_the_file_whole(tmp_path, durable):
    target = tmp_path / "run.json"
    write_json(target, {"epoch": 1}, durable=durable)
    write_json(target, {"epoch": 2, "history": [0.1, 0.2]}, durable=durable)
    assert json.loads(target.read_text()) == {"epoch": 2, "history": [0.1, 0.2]}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_two_writes_of_one_file_use_two_temporary_files(tmp_path):
    target = tmp_path / "state.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1"  # the outer block ends last: its file is the one left
