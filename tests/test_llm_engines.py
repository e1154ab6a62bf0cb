"""Every engine through the same interface: a batch of requests in, one `Result` per
request out, in order; a request an engine cannot serve is an error result, not an
exception. And the registry builds engines from typed configs."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.config.generation import GenerationConfig
from pipeline.demo import DemoConfig, write_demo_source
from pipeline.llm.engines import Engine, EngineUnavailable, build_engine, parse_engine_config
from pipeline.llm.prompts import build_description, render_request
from pipeline.llm.testing import FakeServer, ScriptedEngine, completion
from pipeline.llm.types import Result, SamplingParams
from pipeline.sources import read_amazon2014


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = write_demo_source(tmp_path_factory.mktemp("demo"), DemoConfig(seed=1, n_users=100, n_items=40))
    return read_amazon2014(out).items.rename(columns={"item_source": "item_id"})


def requests_for(items: pd.DataFrame) -> list:
    rows = items.head(3).to_dict("records")
    descriptions = [build_description(None, r["title"], r["brand"], r["categories"], r["description"]) for r in rows]
    return [
        render_request("description_generation", item_image=rows[0]["image_path"]),
        render_request("attribute_masking", item_description=descriptions[0]),
        render_request("attribute_completion", context={"source": descriptions[1]},
                       masked_description=descriptions[1].replace("Title:", "Title: [MASK]")),
        render_request("direct_generation", SamplingParams(seed=3), positive_attributes=descriptions[2]),
    ]


def openai_answer(n, body, headers):
    content = body["messages"][0]["content"]
    kind = "image" if isinstance(content, list) else "text"
    return 200, completion(f"{kind} answer"), 0


@pytest.mark.parametrize("kind", ["catalog", "visual", "openai", "scripted"])
def test_each_engine_serves_a_batch_through_the_same_interface(kind, demo):
    requests = requests_for(demo)
    with FakeServer(openai_answer) as server:
        engine: Engine = {
            "catalog": lambda: build_engine({"kind": "catalog"}, catalogue=demo),
            "visual": lambda: build_engine({"kind": "visual"}),
            "openai": lambda: build_engine({"kind": "openai", "base_url": server.url, "model": "m"}),
            "scripted": lambda: ScriptedEngine(lambda r: f"{r.template} done"),
        }[kind]()
        with engine:
            results = engine.generate(requests)
    assert len(results) == len(requests)
    assert all(isinstance(r, Result) and r.engine == engine.kind and r.model == engine.model for r in results)
    assert engine.kind == kind and engine.fingerprint
    ok = [r.ok for r in results]
    if kind == "catalog":  # no pictures; masks, completes and swaps
        assert ok == [False, True, True, True] and "visual engine" in results[0].error
        assert "[MASK]" in results[1].text and "[MASK]" not in results[2].text
    elif kind == "visual":  # only pictures
        assert ok == [True, False, False, False] and results[0].text.startswith("[from image features]")
    elif kind == "openai":
        assert [r.text for r in results] == ["image answer", "text answer", "text answer", "text answer"]
    else:
        assert results[3].text == "direct_generation done"


def test_registry_builds_from_typed_configs(demo):
    assert build_engine({"kind": "visual", "max_colours": 2}).config.max_colours == 2
    with pytest.raises(EngineUnavailable, match="items table"):
        build_engine({"kind": "catalog"})
    with pytest.raises(EngineUnavailable, match="not a local folder"):
        build_engine({"kind": "vllm", "model": "Qwen/Qwen2.5-VL-3B-Instruct"})
    with pytest.raises(ValidationError):
        parse_engine_config({"kind": "catalog", "salient_termz": 3})  # extra keys are refused
    with pytest.raises(ValidationError):
        parse_engine_config({"kind": "gpt"})
    config = GenerationConfig.model_validate({"generator": {"kind": "openai", "base_url": "http://h/v1", "model": "m"},
                                              "sampling": {"temperature": 0.2}})  # fmt: skip
    assert config.generator.kind == "openai" and config.describer.kind == "visual"
    assert config.sampling.temperature == 0.2
    with pytest.raises(ValidationError):
        SamplingParams(top_p=0)
    with pytest.raises(ValidationError):
        SamplingParams().temperature = 1.0  # frozen
