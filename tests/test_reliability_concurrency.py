"""Two processes on one home: temporary files are unique per writer, and one writer holds a
dataset at a time (a lock per dataset home, released when its holder dies)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd

from tests.conftest import REPO, start_materialize, toy_project, wait_for_line

ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # a script runs this checkout's code

# Writer "a" stops inside each write (after its temporary file is written, before the rename)
# until writer "b" has written the same file completely: the interleaving that broke two runs.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    import pandas as pd
    import torch

    from neggen_model.atomic import write_json
    from neggen_model.checkpoint import write_tensors
    from pipeline.storage import DatasetStore

    folder, role = Path(sys.argv[1]), sys.argv[2]

    def wait_for(name):
        deadline = time.time() + 60
        while not (folder / name).exists():
            assert time.time() < deadline, f"timed out waiting for {name}"
            time.sleep(0.01)

    writes = {
        "train_state.json": lambda: write_json(folder / "train_state.json", {"writer": role}),
        "state-00008.safetensors": lambda: write_tensors(folder / "state-00008.safetensors", {"w": torch.ones(4)}),
        "table.parquet": lambda: DatasetStore(folder.parent, folder.name).write("table", pd.DataFrame({"writer": [role]})),
    }
    if role == "a":
        rename = os.replace

        def paused(source, target):
            (folder / f"a-in-{Path(target).name}").touch()
            wait_for(f"b-done-{Path(target).name}")
            rename(source, target)

        os.replace = paused
        for write in writes.values():
            write()
    else:
        for name, write in writes.items():
            wait_for(f"a-in-{name}")
            write()
            (folder / f"b-done-{name}").touch()
    print("ok")
    """
)


def test_two_processes_writing_the_same_checkpoint_files_do_not_collide(tmp_path):
    """Fixed temporary names (`train_state.json.tmp`) let one writer rename the other's file
    away: FileNotFoundError. Each write now has its own temporary file."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    folder = tmp_path / "run"
    folder.mkdir()
    writers = {
        role: subprocess.Popen([sys.executable, str(script), str(folder), role], cwd=REPO, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for role in ("a", "b")
    }
    for role, writer in writers.items():
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, f"writer {role}: {err[-2000:]}"
        assert out.strip() == "ok"
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith(("a-in", "b-done")))
    assert files == ["state-00008.safetensors", "table.parquet", "train_state.json"]  # no temporary file left
    # "a" renamed last: its files are whole, not "b"'s temporary files renamed away under it
    assert json.loads((folder / "train_state.json").read_text()) == {"writer": "a"}
    assert pd.read_parquet(folder / "table.parquet").writer.tolist() == ["a"]


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from pipeline.lock import dataset_lock

    with dataset_lock(Path(sys.argv[1]), "the test's first writer"):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_a_second_writer_waits_and_a_killed_holder_frees_the_lock(tmp_path):
    """Nothing took a lock: two runs on one home wrote over each other. Now the second one
    says who holds the dataset and waits; kill -9 of the holder frees the lock."""
    home, env = toy_project(tmp_path)

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(home / "toy")], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    writer = None
    try:
        assert holder.stdout.readline().strip() == "locked"
        writer, lines = start_materialize(tmp_path, env, "interactions")
        said = wait_for_line(lines, "waiting for it to finish", writer, seconds=120)
        assert f"{home / 'toy'} is being written by pid {holder.pid} (the test's first writer" in said
        time.sleep(1.0)
        assert writer.poll() is None and not (home / "toy" / "interactions.parquet").exists()

        os.kill(holder.pid, signal.SIGKILL)  # a crash: the kernel frees the lock
        assert writer.wait(timeout=120) == 0, "".join(lines)
        assert (home / "toy" / "interactions.parquet").exists()
        assert any("[1/1] interactions done" in line for line in lines)
    finally:
        for process in (holder, writer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
