"""The generation cache: content-addressed keys, re-runs regenerate only what changed, and a
process killed mid-run (SIGKILL, in a real subprocess) keeps everything it generated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.llm.cache import GenerationCache, cache_key
from pipeline.llm.engines.base import Engine
from pipeline.llm.prompts import render_request
from pipeline.llm.run import generate_stage
from pipeline.llm.testing import ScriptedEngine
from pipeline.llm.types import ImagePart, Result, SamplingParams

REPO = Path(__file__).resolve().parents[1]


class SlowEngine(Engine):
    """Direct generation by renaming 'item' → 'thing', slowly; announces what is stored."""

    kind = "slow-fake"

    def __init__(self, batch_size: int):
        super().__init__("slow-v1")
        self.batch_size = batch_size
        self.batches = 0

    def generate(self, requests):
        # generate_stage stores each batch before asking for the next, so everything
        # announced here is already committed
        print(f"stored {self.batches * self.batch_size}", flush=True)
        time.sleep(0.03)
        self.batches += 1
        return [Result(text=r.fields["positive_attributes"].replace("item", "thing"), engine=self.kind,
                       model=self.model) for r in requests]  # fmt: skip


def slow_items(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": range(n), "description_text": [f"Title: item number {i}" for i in range(n)]})


def mask_first_word(request) -> str:
    words = request.fields["item_description"].split(" ")
    return " ".join(["[MASK]", *words[1:]])


def items_with_text(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": range(n), "description_text": [f"Alpha{i} bag made of wool" for i in range(n)]})


def test_rerun_regenerates_only_what_changed(tmp_path):
    cache = GenerationCache(tmp_path / "cache")
    engine = ScriptedEngine(mask_first_word)
    items = items_with_text(20)
    first = generate_stage(items, "masked", engine, cache, batch_size=8, progress=False)
    assert first.meta["generated"] == 20 and first.meta["cache_hits"] == 0 and len(cache) == 20
    assert not first.outputs["cache_hit"].any()

    engine.calls = 0
    again = generate_stage(items, "masked", engine, cache, batch_size=8, progress=False)
    assert again.meta["generated"] == 0 and again.meta["cache_hits"] == 20 and engine.calls == 0
    assert again.outputs["cache_hit"].all()
    assert again.outputs["text"].tolist() == first.outputs["text"].tolist()

    changed = items.copy()
    changed.loc[7, "description_text"] = "Omega bag made of linen"
    third = generate_stage(changed, "masked", engine, cache, batch_size=8, progress=False)
    assert third.meta["generated"] == 1 and third.meta["cache_hits"] == 19
    assert third.outputs.set_index("item_id").loc[7, "text"] == "[MASK] bag made of linen"

    # another sampling setting or another template version: everything is new
    hotter = generate_stage(items, "masked", engine, cache, sampling=SamplingParams(temperature=1.0), progress=False)
    assert hotter.meta["generated"] == 20
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "attribute_masking.md").write_text("version: 99\n---\nMask: {item_description}\nOutput:")
    bumped = generate_stage(items, "masked", engine, cache, prompts_dir=prompts, progress=False)
    assert bumped.meta["generated"] == 20 and set(bumped.outputs["template_version"]) == {99}
    assert cache.hits > 0 and cache.misses > 0


def test_keys_follow_content_not_names(tmp_path):
    engine = ScriptedEngine(lambda r: "x")
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    a.write_bytes(b"\x89PNG same bytes")
    b.write_bytes(b"\x89PNG same bytes")
    c.write_bytes(b"\x89PNG other bytes")
    key = lambda path: cache_key(render_request("description_generation", item_image=path), engine)  # noqa: E731
    assert key(a) == key(b) != key(c)
    data = cache_key(render_request("description_generation", item_image=ImagePart(data=a.read_bytes())), engine)
    assert data == key(a)
    req = render_request("direct_generation", positive_attributes="p")
    assert cache_key(req, engine) != cache_key(req, ScriptedEngine(lambda r: "x", model="other"))
    assert cache_key(req, engine) != cache_key(req.with_seed(1), engine)


def test_only_successes_are_stored_and_other_connections_see_them(tmp_path):
    writer = GenerationCache(tmp_path)
    reader = GenerationCache(tmp_path)
    ok = Result(text="t", engine="e", model="m")
    failed = Result(engine="e", model="m", error="HTTP 500")
    assert writer.put_many([("k1", ok), ("k2", failed)]) == 1
    found = reader.get_many(["k1", "k2", "k1"])
    assert set(found) == {"k1"} and found["k1"].text == "t"
    assert (reader.hits, reader.misses) == (2, 1)
    writer.close()
    reader.close()


def test_a_killed_run_keeps_everything_generated_before_the_kill(tmp_path):
    folder = tmp_path / "cache"
    script = tmp_path / "generate.py"
    script.write_text(
        "import sys\n"
        "from pipeline.llm.cache import GenerationCache\n"
        "from pipeline.llm.run import generate_stage\n"
        "from tests.test_llm_cache import SlowEngine, slow_items\n"
        "generate_stage(slow_items(400), 'direct', SlowEngine(4), GenerationCache(sys.argv[1]),\n"
        "               batch_size=4, progress=False)\n"
        "print('finished', flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)  # fmt: skip
    stored = 0
    try:
        for line in proc.stdout:
            assert line.startswith("stored "), line
            stored = int(line.split()[1])
            if stored >= 40:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and stored >= 40
    cache = GenerationCache(folder)
    assert len(cache) >= stored
    # a new run picks up where the killed one stopped
    resumed = generate_stage(slow_items(60), "direct", SlowEngine(4), cache, batch_size=4, progress=False)
    assert resumed.meta["cache_hits"] >= stored and resumed.failures.empty
    assert resumed.outputs.set_index("item_id").loc[3, "text"] == "Title: thing number 3"
