"""`neggen sql` is read-only and sandboxed, on real DuckDB: statements that write, attach or
install are refused with one line and a hint, files and URLs beyond the stage views are out
of reach (nothing is created, no request leaves), and queries on the views still work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pandas as pd
import pytest

from assets import cli
from pipeline.storage import DatasetStore


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder whose home holds the demo dataset's data-stage tables (hand-written)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEGGEN_CONFIG", raising=False)  # main() sets it; restored after the test
    monkeypatch.setenv("NEGGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    store = DatasetStore(tmp_path / "home", "demo")
    store.write("interactions", pd.DataFrame({
        "user_id": [0, 0, 1, 1, 2], "item_id": [0, 1, 0, 1, 1], "x_label": [0, 1, 0, 2, 0],
        "split": ["train", "valid", "train", "test", "train"],
    }))  # fmt: skip
    store.write("items", pd.DataFrame({"item_id": [0, 1], "original_id": ["A", "B"], "title": ["a", "b"]}))
    store.write("users", pd.DataFrame({"user_id": [0, 1, 2], "n_train": [1, 1, 1], "n_valid": [1, 0, 0],
                                       "n_test": [0, 1, 0]}))  # fmt: skip
    return tmp_path


def sql(capsys, query=None, *flags):
    code = cli.main(["sql", "--dataset", "demo", *flags, *([query] if query else [])])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture
def http_server():
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"a,b\n1,2\n")

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_writes_attach_install_and_outside_files_are_refused(project, capsys, http_server):
    url, hits = http_server
    home = project / "home" / "demo"
    assert sql(capsys)[0] == 0  # (the first command writes the Dagster instance's settings)
    before = snapshot(project)
    outside = project / "elsewhere.csv"
    attempts = {
        "COPY": f"COPY (SELECT 1 AS user_id) TO '{home / 'users.parquet'}' (FORMAT parquet, USE_TMP_FILE false)",
        "COPY ": f"COPY interactions TO '{outside}'",
        "ATTACH": f"ATTACH '{project / 'new.duckdb'}' AS other",
        "LOAD": "INSTALL httpfs",
        "LOAD ": "LOAD httpfs",
        "EXPORT": f"EXPORT DATABASE '{project / 'export'}'",
        "SET": "SET enable_external_access = true",
        "CREATE": "CREATE TABLE t AS SELECT 1",
        "Permission Error": f"SELECT * FROM read_csv('{url}/data.csv')",
        "Permission Error ": "SELECT * FROM read_text('/etc/hostname')",
        "Permission Error  ": "SELECT * FROM 'home/demo/../demo/users.parquet', read_blob('/etc/passwd')",
        "SELECT then COPY": f"SELECT 1; COPY items TO '{outside}'",
    }
    for expected, query in attempts.items():
        code, out, err = sql(capsys, query)
        assert code == 2, (query, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("neggen: refused: "), (query, err)
        assert "Traceback" not in err and out == ""
        first = expected.strip().split(" then ")[-1]
        assert first in lines[0], (query, lines[0])
        assert "for a writable DuckDB, run `duckdb` on the parquet files directly" in lines[0]
    assert snapshot(project) == before  # nothing created, nothing overwritten
    assert hits == []  # no request left DuckDB

    # The views and the inspection views still answer.
    code, out, err = sql(capsys, "SELECT split, interactions FROM split_counts ORDER BY split", "--csv")
    assert code == 0, err
    assert pd.read_csv(StringIO(out)).set_index("split").interactions.to_dict() == {"test": 1, "train": 3, "valid": 1}
    code, out, _ = sql(capsys, "SELECT i.title, p.interactions FROM items i JOIN item_popularity p USING (item_id) "
                               "ORDER BY 1", "--csv")  # fmt: skip
    assert code == 0 and pd.read_csv(StringIO(out)).interactions.tolist() == [2, 3]
    code, out, _ = sql(capsys, "DESCRIBE users")
    assert code == 0 and "n_train" in out
    code, out, _ = sql(capsys, "EXPLAIN SELECT count(*) FROM user_activity")
    assert code == 0
    code, out, _ = sql(capsys)  # the views and their row counts
    assert code == 0 and "split_counts" in out and "interactions" in out
    code, _, err = sql(capsys, "SELEC 1")  # an ordinary error is not a refusal
    assert code == 1 and "query failed" in err
    assert pd.read_parquet(project / "home" / "demo" / "users.parquet").user_id.tolist() == [0, 1, 2]


def test_the_cli_prints_one_line_without_a_traceback(project):
    env = {k: v for k, v in os.environ.items() if k != "NEGGEN_CONFIG"}
    run = subprocess.run(
        [sys.executable, "-m", "assets.cli", "sql", "--dataset", "demo",
         f"COPY (SELECT 1) TO '{project / 'home' / 'demo' / 'users.parquet'}'"],
        cwd=project, env={**env, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.stderr.startswith("neggen: refused: COPY statements are refused")
    assert pd.read_parquet(project / "home" / "demo" / "users.parquet").user_id.tolist() == [0, 1, 2]
