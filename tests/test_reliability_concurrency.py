"""Two processes on one home: temporary files are unique per writer, and one writer holds a
dataset at a time (a lock per dataset home, released when its holder dies)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # a script runs this checkout's code

# Writer "a" stops inside each write (after its temporary file is written, before the rename)
# until writer "b" has written the same file completely: the interleaving that broke two runs.
WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import torch

    import neggen_model.checkpoint as checkpoint
    import pipeline.training as training

    folder, role = Path(sys.argv[1]), sys.argv[2]

    def wait_for(name):
        deadline = time.time() + 60
        while not (folder / name).exists():
            assert time.time() < deadline, f"timed out waiting for {name}"
            time.sleep(0.01)

    def paused(function, step):
        def wrapper(*args, **kwargs):
            out = function(*args, **kwargs)
            (folder / f"a-in-{step}").touch()
            wait_for(f"b-done-{step}")
            return out
        return wrapper

    writes = {
        "json": lambda: checkpoint.write_json(folder / "train_state.json", {"writer": role}),
        "tensors": lambda: checkpoint.write_tensors(folder / "state-00008.safetensors", {"w": torch.ones(4)}),
        "record": lambda: training._write_json(folder / "latest_run.json", {"writer": role}),
    }
    if role == "a":
        json.dump = paused(json.dump, "json")
        checkpoint.save_file = paused(checkpoint.save_file, "tensors")
        training.json.dumps = paused(json.dumps, "record")
        for write in writes.values():
            write()
    else:
        for step, write in writes.items():
            wait_for(f"a-in-{step}")
            write()
            (folder / f"b-done-{step}").touch()
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
    assert files == ["latest_run.json", "state-00008.safetensors", "train_state.json"]  # no temporary file left
