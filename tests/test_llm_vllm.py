"""The in-process vLLM engine.

Everywhere: the typed config, the clear errors (a Hub id or a missing folder is refused before
anything loads; vLLM absent, simulated by making `import vllm` fail), the request → `LLM.chat`
conversation mapping on the demo world's real pictures, the per-request failure isolation, the
CPU settings (against a stand-in `vllm`; vLLM's real CPU build runs in tests/test_llm_vllm_cpu.py,
marker `vllm`) and `bench/vllm_generate.py --dry-run` end to end. Where vLLM and a GPU are there
(`-m gpu`, with NEGGEN_VLLM_MODEL=<a local VLM folder>, e.g. Qwen2.5-VL-3B-Instruct): the
interface tests the other engines get, on the real model.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from pipeline.config.generation import GenerationConfig, VLLMEngineConfig
from pipeline.llm.engines import EngineUnavailable, build_engine, parse_engine_config
from pipeline.llm.engines import vllm_engine as ve
from pipeline.llm.prompts import render_request
from pipeline.llm.types import ImagePart, Message, Request, Result, SamplingParams, TextPart
from tests.test_llm_engines import demo, requests_for  # noqa: F401 - `demo` is a fixture

REPO = Path(__file__).resolve().parents[1]
MODEL_ENV = "NEGGEN_VLLM_MODEL"


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """A folder that passes the local-model check (vLLM is never reached with it here)."""
    folder = tmp_path / "Tiny-VLM"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    return folder


# -- everywhere: config and errors -------------------------------------------------------


def test_config_is_typed_with_defaults_and_strict():
    config = parse_engine_config({"kind": "vllm", "model": "/models/qwen"})
    assert isinstance(config, VLLMEngineConfig)
    assert (config.dtype, config.max_model_len, config.gpu_memory_utilization) == ("auto", None, 0.9)
    assert (config.kv_cache_gib, config.enforce_eager) == (None, False)
    assert (config.tensor_parallel_size, config.limit_mm_per_prompt, config.trust_remote_code, config.seed) == (1, 1, False, 0)
    full = {"kind": "vllm", "model": "/m", "dtype": "bfloat16", "max_model_len": 4096, "gpu_memory_utilization": 0.5,
            "tensor_parallel_size": 2, "limit_mm_per_prompt": 2, "trust_remote_code": True, "seed": 7,
            "prompt_mode": "structured", "kv_cache_gib": 2.5, "enforce_eager": True}  # fmt: skip
    assert parse_engine_config(full).model_dump() == full
    for bad in ({"model": ""}, {"dtype": "float8"}, {"max_model_len": 0}, {"gpu_memory_utilization": 0},
                {"gpu_memory_utilization": 1.5}, {"tensor_parallel_size": 0}, {"limit_mm_per_prompt": -1},
                {"seed": -1}, {"modle": "x"}, {"prompt_mode": "json"}, {"kv_cache_gib": 0}):  # fmt: skip
        with pytest.raises(ValidationError):
            parse_engine_config({"kind": "vllm", "model": "/m", **bad})
    with pytest.raises(ValidationError):
        parse_engine_config({"kind": "vllm"})  # the model is required
    generation = GenerationConfig.model_validate({"describer": {"kind": "vllm", "model": "/m"},
                                                  "generator": {"kind": "vllm", "model": "/m", "max_model_len": 8192}})  # fmt: skip
    assert generation.describer.kind == "vllm" and generation.generator.max_model_len == 8192


def test_hub_ids_and_non_folders_are_refused_before_anything_loads(tmp_path, model_folder):
    with pytest.raises(EngineUnavailable, match="not a local folder.*never downloads.*hf download Qwen/Qwen2.5-VL-3B-Instruct"):
        build_engine({"kind": "vllm", "model": "Qwen/Qwen2.5-VL-3B-Instruct"})
    with pytest.raises(EngineUnavailable, match="model folder .* not found"):
        build_engine({"kind": "vllm", "model": str(tmp_path / "nope")})
    (model_folder / "config.json").unlink()
    with pytest.raises(EngineUnavailable, match="has no config.json"):
        build_engine({"kind": "vllm", "model": str(model_folder)})
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(EngineUnavailable, match="is a file"):
        build_engine({"kind": "vllm", "model": str(weights)})


def test_missing_vllm_is_a_clear_error(model_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError, as when absent
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test
    with pytest.raises(EngineUnavailable) as caught:
        build_engine({"kind": "vllm", "model": str(model_folder)})
    message = str(caught.value)
    assert "vLLM is not importable" in message and "pip install 'neggen[gpu]'" in message and "CUDA" in message
    assert "scripts/install.sh --vllm" in message
    assert "Llama-3.2-11B-Vision needs vLLM <= 0.10.2" in message
    assert "`openai` engine" in message and "`vllm serve`" in message and "`transformers`" in message
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set before vLLM would be imported


# -- everywhere: request → the conversation LLM.chat takes -------------------------------


def test_a_picture_request_becomes_openai_style_parts_with_a_data_uri(demo):
    path = Path(demo.image_path.dropna().iloc[0])
    request = render_request("description_generation", item_image=path)
    before, image, after = request.messages[0].content
    expected = [{"role": "user", "content": [
        {"type": "text", "text": before.text},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()}},
        {"type": "text", "text": after.text},
    ]}]  # fmt: skip
    chat = ve.conversation(request)
    assert chat == expected
    assert before.text.startswith("**Task Overview:**") and after.text.endswith("**Output:**")
    json.dumps(chat)  # plain JSON types only: no bytes, no paths
    url = chat[0]["content"][1]["image_url"]["url"]
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    original = Image.open(path)
    assert decoded.size == original.size and decoded.tobytes() == original.tobytes()


def test_image_bytes_keep_their_format_and_text_requests_stay_plain(demo):
    buffer = io.BytesIO()
    Image.open(demo.image_path.dropna().iloc[1]).convert("RGB").save(buffer, format="JPEG")
    request = Request(messages=(
        Message(role="system", content=(TextPart(text="You describe products."),)),
        Message.user("Colours?", ImagePart(data=buffer.getvalue()), "Shape?"),
    ))  # fmt: skip
    system, user = ve.conversation(request)
    assert system == {"role": "system", "content": "You describe products."}
    assert [p["type"] for p in user["content"]] == ["text", "image_url", "text"]
    assert user["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    masked = render_request("attribute_masking", item_description="Title: Norvik Cotton Bag")
    assert ve.conversation(masked) == [{"role": "user", "content": masked.messages[0].text}]


def test_a_failing_request_is_isolated_and_the_others_are_served():
    calls = []

    def run(batch):
        calls.append(list(batch))
        if "bad" in batch:
            raise ValueError("prompt too long")
        return [x.upper() for x in batch]

    batch = ["a", "b", "bad", "c", "d", "e"]
    results = ve.split_on_failure(batch, run, lambda err: f"error: {err}")
    assert results == ["A", "B", "error: prompt too long", "C", "D", "E"]
    assert calls[0] == batch and ["bad"] in calls and len(calls) < 2 * len(batch)
    assert ve.split_on_failure([], run, str) == []

    class EngineDeadError(RuntimeError):  # vLLM's engine process died: no half would fare better
        pass

    def dead(batch):
        calls.append(list(batch))
        raise EngineDeadError("engine core died")

    calls.clear()
    assert ve.split_on_failure(["a", "b", "c"], dead, lambda err: "dead") == ["dead"] * 3 and len(calls) == 1


# -- everywhere: the structured prompt mode's schema as vLLM's structured outputs --------


class _Params:
    """Stands in for vLLM's StructuredOutputsParams / GuidedDecodingParams / SamplingParams."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_a_schema_becomes_the_structured_outputs_of_the_installed_vllm():
    from types import SimpleNamespace

    schema = {"type": "object"}
    current = ve.json_schema_params(SimpleNamespace(sampling_params=SimpleNamespace(StructuredOutputsParams=_Params)))
    (key, params), = current(schema).items()
    assert key == "structured_outputs" and params.kwargs == {"json": schema}  # vLLM >= 0.11
    older = ve.json_schema_params(SimpleNamespace(sampling_params=SimpleNamespace(GuidedDecodingParams=_Params)))
    (key, params), = older(schema).items()
    assert key == "guided_decoding" and params.kwargs == {"json": schema}  # before (removed in 0.12)
    assert ve.json_schema_params(SimpleNamespace(sampling_params=SimpleNamespace())) is None
    assert ve.grammar_backend_args(SimpleNamespace(sampling_params=SimpleNamespace(StructuredOutputsParams=_Params))) == {
        "structured_outputs_config": {"backend": "guidance"}}  # fmt: skip
    assert ve.grammar_backend_args(SimpleNamespace(sampling_params=SimpleNamespace(GuidedDecodingParams=_Params))) == {
        "guided_decoding_backend": "guidance"}  # fmt: skip
    assert ve.grammar_backend_args(SimpleNamespace(sampling_params=SimpleNamespace())) == {}


@pytest.fixture
def fake_vllm(monkeypatch):
    """A `vllm` module whose LLM records each `chat` call and answers under the schema (the first
    enum word, or "Zed" per blank), or in prose without one; its token ids are one per word of the
    conversation and of the answer."""
    import types

    class LLM:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.calls = []
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(dtype="torch.bfloat16"))

        def chat(self, conversations, params, use_tqdm=False):
            self.calls.append((conversations, params))
            answers = []
            for conversation, p in zip(conversations, params):
                structured = p.kwargs.get("structured_outputs")
                schema = structured.kwargs["json"]["properties"] if structured else None
                if schema is None:
                    text = "Here you are."
                elif "mask" in schema:
                    text = json.dumps({"mask": schema["mask"]["items"]["enum"][:1]})
                else:
                    text = json.dumps({"replacements": ["Zed"] * schema["replacements"]["minItems"]})
                words = " ".join(m["content"] for m in conversation).split()
                answers.append(types.SimpleNamespace(prompt_token_ids=list(range(len(words))), outputs=[
                    types.SimpleNamespace(text=text, finish_reason="stop", token_ids=list(range(len(text.split()))))]))  # fmt: skip
            return answers

    module = types.ModuleType("vllm")
    module.__version__ = "0.12.0"
    module.LLM, module.SamplingParams = LLM, _Params
    module.sampling_params = types.SimpleNamespace(StructuredOutputsParams=_Params)
    module.platforms = types.SimpleNamespace(current_platform=types.SimpleNamespace(is_cpu=lambda: False))
    monkeypatch.setitem(sys.modules, "vllm", module)
    for name in ("HF_HUB_OFFLINE", *ve.NO_USAGE_STATS):  # the engine sets them; restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
    return module


def test_the_structured_stage_through_the_engine_sends_the_schema_per_request(fake_vllm, model_folder):
    import pandas as pd

    from pipeline.llm.run import generate_stage, join_texts

    items = pd.DataFrame({"item_id": [1, 2], "description_text": ["Title: Norvik Cotton Bag", "Title: Zentara Mug"]})
    engine = build_engine({"kind": "vllm", "model": str(model_folder), "prompt_mode": "structured"})
    masked = generate_stage(items, "masked", engine, progress=False, prompt_mode="structured")
    negative = generate_stage(join_texts(items, masked=masked.outputs), "negative", engine, progress=False,
                              prompt_mode="structured")  # fmt: skip
    assert negative.outputs.sort_values("item_id").text.tolist() == ["Title: Zed Cotton Bag", "Title: Zed Mug"]
    (conversations, params), (completions, _) = engine._llm.calls  # one LLM.chat per batch
    for run, sent in ((masked, conversations), (negative, completions)):  # vLLM's token ids, in the metadata
        assert run.meta["prompt_tokens"] == sum(len(chat[0]["content"].split()) for chat in sent)
        assert run.meta["completion_tokens"] == 4  # two answers of two "tokens" ('{"mask": ["Norvik"]}')
    assert [p.kwargs["structured_outputs"].kwargs["json"]["properties"]["mask"]["items"]["enum"] for p in params] == [
        ["Norvik", "Cotton", "Bag"], ["Zentara", "Mug"]]  # fmt: skip
    assert all("uniqueItems" not in json.dumps(p.kwargs["structured_outputs"].kwargs["json"]) for p in params)  # vLLM refuses it
    assert params[0].kwargs["temperature"] == 0.7 and params[0].kwargs["max_tokens"] == 256
    assert "Choose the key feature words" in conversations[0][0]["content"]
    (plain,) = engine.generate([render_request("attribute_masking", item_description="Title: Norvik Bag")])
    assert plain.text == "Here you are." and "structured_outputs" not in engine._llm.calls[-1][1][0].kwargs
    del fake_vllm.sampling_params.StructuredOutputsParams  # a vLLM without structured outputs
    old = build_engine({"kind": "vllm", "model": str(model_folder)})
    structured = render_request("attribute_masking_structured", item_description="Title: Norvik Bag",
                                response_schema={"type": "object"})  # fmt: skip
    (refused,) = old.generate([structured])
    assert not refused.ok and "has no structured outputs" in refused.error


def test_on_cpu_the_kv_cache_is_sized_not_a_share_of_the_ram(fake_vllm, model_folder):
    gpu = build_engine({"kind": "vllm", "model": str(model_folder)})
    assert gpu.device == "gpu" and "kv_cache_memory_bytes" not in gpu._llm.kwargs
    assert gpu._llm.kwargs["gpu_memory_utilization"] == 0.9 and gpu._llm.kwargs["enforce_eager"] is False
    sized = build_engine({"kind": "vllm", "model": str(model_folder), "kv_cache_gib": 3})
    assert sized._llm.kwargs["kv_cache_memory_bytes"] == 3 * 2**30
    fake_vllm.platforms.current_platform.is_cpu = lambda: True  # vLLM's CPU build
    cpu = build_engine({"kind": "vllm", "model": str(model_folder), "enforce_eager": True})
    assert cpu.device == "cpu" and cpu._llm.kwargs["kv_cache_memory_bytes"] == 2**30 and cpu._llm.kwargs["enforce_eager"]
    assert cpu._llm.kwargs["enable_chunked_prefill"] is False and "enable_chunked_prefill" not in gpu._llm.kwargs
    assert gpu._llm.kwargs["structured_outputs_config"] == {"backend": "guidance"}  # not xgrammar: see GRAMMAR_BACKEND
    cpu = build_engine({"kind": "vllm", "model": str(model_folder), "kv_cache_gib": 0.5})
    assert cpu._llm.kwargs["kv_cache_memory_bytes"] == 2**29


# -- everywhere: the GPU benchmark script, with the CPU engines --------------------------


def test_bench_script_dry_run_writes_its_summary(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "bench/vllm_generate.py", "--dry-run", "--items", "20", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert summary["dry_run"] is True and summary["items"] == 20 and summary["model"] is None
    assert summary["engines"] == {"describer": "visual", "generator": "catalog"}
    assert {"gpu", "vllm_version", "load_seconds", "sampling", "end_to_end"} <= set(summary)
    assert list(summary["stages"]) == ["description", "masked", "negative"]
    for stage in summary["stages"].values():
        assert stage["items"] == 20 and stage["items_per_s"] > 0
        assert stage["validity_rate"] == stage["valid"] / 20
        assert stage["valid"] + sum(stage["failures_by_reason"].values()) == 20
        assert stage["prompt_tokens"] is stage["completion_tokens"] is stage["completion_tokens_per_s"] is None  # no model
    assert summary["end_to_end"]["valid_negatives"] == summary["stages"]["negative"]["valid"]
    assert "written to" in proc.stdout


def test_bench_script_without_a_model_says_what_to_give(tmp_path):
    proc = subprocess.run([sys.executable, "bench/vllm_generate.py", "--model", str(tmp_path / "nope")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "no such folder" in proc.stderr and "never downloads" in proc.stderr


# -- with vLLM and a GPU: the interface, on a real model ---------------------------------


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'neggen[gpu]' on a CUDA machine)")
    folder = os.environ.get(MODEL_ENV)
    if not folder:
        pytest.skip(f"set {MODEL_ENV} to a local VLM folder (e.g. Qwen2.5-VL-3B-Instruct) to run the vLLM tests")
    engine = build_engine({"kind": "vllm", "model": folder, "max_model_len": 4096, "gpu_memory_utilization": 0.6})
    yield engine
    engine.close()


@pytest.mark.gpu
def test_vllm_serves_the_interface(engine, demo):
    requests = requests_for(demo)  # a picture, a masking, a completion, a direct negative
    results = engine.generate(requests)
    assert len(results) == len(requests) and all(isinstance(r, Result) for r in results)
    assert all(r.ok and r.engine == "vllm" and r.model == engine.model and r.text.strip() for r in results)
    assert all(r.finish_reason in ("stop", "length") for r in results)
    assert engine.fingerprint.startswith(f"{engine.model}@") and f"/{engine.dtype}/" in engine.fingerprint
    assert engine.generate([]) == []


@pytest.mark.gpu
def test_vllm_failures_stay_per_request(engine, demo, tmp_path):
    picture = ImagePart(path=Path(demo.image_path.dropna().iloc[0]))
    requests = [
        Request(messages=(Message.user("Compare.", picture, picture),)),  # 2 images, limit 1
        Request(messages=(Message.user("Describe.", ImagePart(path=tmp_path / "missing.png")),)),
        Request(messages=(Message.user("word " * 6000),)),  # longer than max_model_len 4096
        requests_for(demo)[1],
    ]
    results = engine.generate(requests)
    assert [r.ok for r in results] == [False, False, False, True]
    assert "limit_mm_per_prompt=1" in results[0].error and "cannot read image" in results[1].error
    assert results[2].error.startswith("generation failed")


@pytest.mark.gpu
def test_vllm_answers_in_request_order_with_per_request_sampling(engine):
    # vLLM does not promise batch-invariant numerics, so order is checked on answers any
    # instruct model gets right, not by comparing batched and one-at-a-time texts.
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    words = ["apple", "river", "violet", "tiger", "candle"]
    requests = [Request(messages=(Message.user(f"Reply with exactly one word, lower case: {w}"),), sampling=greedy)
                for w in words]  # fmt: skip
    texts = [r.text.strip().lower() for r in engine.generate(requests)]
    assert all(w in t for w, t in zip(words, texts)), texts
    one_token = requests[0].model_copy(update={"sampling": SamplingParams(temperature=0.0, max_tokens=1)})
    mixed = engine.generate([one_token, requests[1]])
    assert mixed[0].finish_reason == "length" and words[1] in mixed[1].text.lower()  # max_tokens per request
    hot = Request(messages=(Message.user("Write a short product name for a red cotton bag."),),
                  sampling=SamplingParams(temperature=1.0, max_tokens=16, seed=5))  # fmt: skip
    alone = engine.generate([hot])[0].text
    assert engine.generate([hot])[0].text == alone  # the request's seed fixes its sample
    assert len({engine.generate([hot.with_seed(s)])[0].text for s in range(6, 10)} | {alone}) > 1
