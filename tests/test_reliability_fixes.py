"""Regression tests for the smaller failures of issue 9: one seed, the vLLM engine's usage
statistics, source files that lie about their lines, and data checks that fail."""

from __future__ import annotations

import json
import sys

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neggen_model.data import InteractionData
from neggen_model.synthetic import clustered_interactions
from pipeline.definitions import all_assets
from pipeline.llm.engines import EngineUnavailable, build_engine
from pipeline.resources import NeggenResource
from pipeline.storage import DatasetStore


def materialize(config_path, selection, partition="demo"):
    return dg.materialize(
        all_assets, partition_key=partition, selection=selection,
        resources={"neggen": NeggenResource(config_path=str(config_path))},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )  # fmt: skip


def step_errors(result) -> str:
    return "\n".join(e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure)


# -- one seed --------------------------------------------------------------------------------


def test_neggen_model_with_one_seed_writes_its_metadata(neggen_home, tmp_path):
    """`neggen: {seeds: [2024]}` crashed the asset with KeyError: 'std' (no std over one seed)."""
    frame = clustered_interactions(n_users=60, n_items=30, per_user=8)
    data = InteractionData.from_frame(frame)
    store = DatasetStore(neggen_home, "demo")
    store.write("interactions", frame)
    rows = [(i, f, v) for i in range(data.n_items) for f in ("title", "brand") for v in ("original", "generated")]
    vectors = np.random.default_rng(0).normal(size=(len(rows), 8)).astype(np.float32)
    store.write("text_embeddings", pa.table({
        "item_id": pa.array([r[0] for r in rows], pa.int64()), "field": [r[1] for r in rows],
        "modality": ["text"] * len(rows), "version": [r[2] for r in rows], "encoder": ["test"] * len(rows),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8),
    }))  # fmt: skip
    config = tmp_path / "neggen.yaml"
    config.write_text(
        "train: {epochs: 2, embedding_size: 8, n_layers: 1}\n"
        "neggen: {seeds: [2024], variants: [neggen], sensitivity: {}}\n"
    )
    result = materialize(config, ["neggen_model"])
    assert result.success, step_errors(result)
    meta = result.asset_materializations_for_node("neggen_model")[0].metadata
    assert meta["runs"].value == 2 and meta["seeds"].value == "2024"
    assert "neggen" in meta["test_mmrec_mean_over_seeds"].value
    assert "NaN" in meta["test_mmrec_std_over_seeds"].value  # no spread over one seed


# -- vLLM usage statistics -------------------------------------------------------------------


def test_vllm_usage_statistics_are_off_before_vllm_is_imported(tmp_path, monkeypatch):
    """The `vllm` engine left vLLM's usage statistics on. A stand-in `vllm` package records the
    environment it is imported under (then fails to import, as vLLM does without a GPU build)."""
    folder = tmp_path / "Tiny-VLM"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    fake = tmp_path / "site" / "vllm"
    fake.mkdir(parents=True)
    record = tmp_path / "seen.json"
    (fake / "__init__.py").write_text(
        "import json, os\n"
        f"json.dump({{k: os.environ.get(k) for k in ('VLLM_NO_USAGE_STATS', 'DO_NOT_TRACK')}}, open({str(record)!r}, 'w'))\n"
        "raise ImportError('stand-in vllm: environment recorded')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    for name in ("VLLM_NO_USAGE_STATS", "VLLM_DO_NOT_TRACK", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    with pytest.raises(EngineUnavailable, match="vLLM is not importable"):
        build_engine({"kind": "vllm", "model": str(folder)})
    assert json.loads(record.read_text()) == {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
