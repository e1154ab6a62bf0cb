"""The one request type and the one result type every engine speaks.

A `Request` is a chat: messages made of text parts and image parts (a local file or raw
bytes). It also carries what it was rendered from (template name and version, the fields
filled in, and optional `context`) so that engines which do not read prompts (the catalogue
engine) can work on the structured input, and so that the cache key covers everything that
can change an answer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.config.generation import SamplingParams

IMAGE_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
              ".webp": "image/webp", ".gif": "image/gif"}  # fmt: skip


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextPart(_Frozen):
    type: Literal["text"] = "text"
    text: str


class ImagePart(_Frozen):
    """An image given as a local file (`path`) or as encoded bytes (`data`), not both."""

    type: Literal["image"] = "image"
    path: Path | None = None
    data: bytes | None = None
    mime: str | None = Field(default=None, description="Guessed from the bytes when absent.")

    @model_validator(mode="after")
    def _one_source(self) -> ImagePart:
        if (self.path is None) == (self.data is None):
            raise ValueError("an image part needs exactly one of `path` or `data`")
        return self

    def __repr_args__(self):  # never dump image bytes into logs
        yield "path", self.path
        if self.data is not None:
            yield "data", f"<{len(self.data)} bytes>"

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else Path(self.path).read_bytes()

    def mime_type(self, data: bytes | None = None) -> str:
        if self.mime:
            return self.mime
        head = (data if data is not None else self.read_bytes())[:12]
        if head.startswith(b"\x89PNG"):
            return "image/png"
        if head.startswith(b"\xff\xd8"):
            return "image/jpeg"
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return "image/webp"
        if head[:4] == b"GIF8":
            return "image/gif"
        if self.path is not None:
            return IMAGE_MIME.get(Path(self.path).suffix.lower(), "application/octet-stream")
        return "application/octet-stream"

    def digest(self) -> str:
        """sha256 of the image bytes: the cache key follows content, not the file name."""
        return hashlib.sha256(self.read_bytes()).hexdigest()


Part = TextPart | ImagePart


class Message(_Frozen):
    role: Literal["system", "user", "assistant"] = "user"
    content: tuple[Part, ...]

    @classmethod
    def user(cls, *parts: str | Part) -> Message:
        return cls(role="user", content=tuple(TextPart(text=p) if isinstance(p, str) else p for p in parts))

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]


class Request(_Frozen):
    """One generation. `messages` is what an LLM sees; the rest says where it came from."""

    messages: tuple[Message, ...]
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    template: str | None = Field(default=None, description="Prompt template name.")
    template_version: int | None = None
    fields: dict[str, str] = Field(
        default_factory=dict, description="The text fields rendered into the template."
    )
    context: dict[str, str] = Field(
        default_factory=dict,
        description="Extra input not in the prompt, for engines that use it (e.g. the "
        "unmasked source text of a completion, for the catalogue engine).",
    )
    response_schema: dict | None = Field(
        default=None,
        description="A JSON schema the answer must follow (the structured prompt mode): the "
        "transformers engine decodes under it, openai and vllm pass it to their server.",
    )

    def with_seed(self, seed: int) -> Request:
        return self.model_copy(update={"sampling": self.sampling.with_seed(seed)})

    @property
    def images(self) -> list[ImagePart]:
        return [img for m in self.messages for img in m.images]

    def content_digest(self) -> str:
        """sha256 over the input: message texts, image bytes (by hash), fields, context, and the
        response schema when there is one."""
        payload = {
            "messages": [
                [m.role, [p.text if isinstance(p, TextPart) else f"image:{p.digest()}" for p in m.content]]
                for m in self.messages
            ],
            "fields": self.fields,
            "context": self.context,
        }
        if self.response_schema is not None:  # only then: free-text requests keep their cache keys
            payload["response_schema"] = self.response_schema
        raw = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(raw).hexdigest()


class Result(BaseModel):
    """What an engine returns for one request: text, or an error saying why not."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    engine: str
    model: str
    finish_reason: str | None = None
    latency_s: float = 0.0
    error: str | None = None
    tries: int = Field(default=1, description="Transport attempts (HTTP retries included).")
    prompt_tokens: int | None = Field(
        default=None,
        description="Tokens of the prompt the model read (chat template applied), as the engine counted "
        "them; None where nothing was counted (engines without a model, results from the cache).",
    )
    completion_tokens: int | None = Field(
        default=None,
        description="Tokens the model generated (its end-of-sequence token included, as vLLM and OpenAI "
        "servers count); None as for `prompt_tokens`.",
    )

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None
