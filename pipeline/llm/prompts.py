"""The paper's prompt templates (`prompts/*.md`): load, version, render.

A template file is a header of `key: value` lines (at least `version:`), a `---` line,
then the body with `{placeholders}`. Placeholders named in the header's `images:` become
image parts of the message; all others are text fields. Rendering is strict: a missing or
unknown field is an error, and braces inside field values are kept as they are.

`build_description` makes the §3.2.1 item description: the image-derived text merged with
the item's title, brand and categories (and, optionally, its source description), one
labelled line each, so later stages can keep the structure line by line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.llm.types import ImagePart, Message, Request, SamplingParams, TextPart

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"

MASK = "[MASK]"
#: Words as every module counts them: [MASK], decimals ("0.25"), words with ' or - inside.
TOKEN_PATTERN = re.compile(r"\[MASK\]|\d+(?:[.,]\d+)+|\w+(?:['’\-]\w+)*")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class PromptError(ValueError):
    """A template that cannot be read, or a render with wrong fields."""


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    body: str
    header: dict[str, str]

    @property
    def image_fields(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in self.header.get("images", "").split(",") if f.strip())

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_PLACEHOLDER.findall(self.body)))

    @property
    def text_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if f not in self.image_fields)


def parse_template(name: str, text: str) -> Template:
    head, sep, body = text.partition("\n---\n")
    if not sep:
        raise PromptError(f"template {name!r}: no `---` line between header and body")
    header = {}
    for line in head.splitlines():
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PromptError(f"template {name!r}: header line {line!r} is not `key: value`")
        header[key.strip()] = value.strip()
    try:
        version = int(header["version"])
    except (KeyError, ValueError):
        raise PromptError(f"template {name!r}: header needs an integer `version:`") from None
    return Template(name=name, version=version, body=body.strip("\n"), header=header)


@lru_cache(maxsize=None)
def _load(directory: Path) -> dict[str, Template]:
    if not directory.is_dir():
        raise PromptError(f"{directory}: prompt template folder not found")
    templates = {}
    for file in sorted(directory.iterdir()):
        if file.suffix in (".md", ".txt") and file.stem.lower() != "readme":
            templates[file.stem] = parse_template(file.stem, file.read_text(encoding="utf-8"))
    return templates


def templates(directory: Path | None = None) -> dict[str, Template]:
    return _load(Path(directory or PROMPTS_DIR).resolve())


def template(name: str, directory: Path | None = None) -> Template:
    known = templates(directory)
    try:
        return known[name]
    except KeyError:
        raise PromptError(f"unknown template {name!r}; known: {', '.join(sorted(known))}") from None


def template_version(name: str, directory: Path | None = None) -> int:
    """The version of a template, as it enters cache keys."""
    return template(name, directory).version


def render(name: str, directory: Path | None = None, **fields: str | ImagePart | Path) -> list[Message]:
    """The chat messages of template `name` with `fields` filled in (one user message).

    Image fields take an `ImagePart` (or a path); they become image parts where their
    placeholder stands.
    """
    tpl = template(name, directory)
    missing = [f for f in tpl.fields if f not in fields]
    unknown = [f for f in fields if f not in tpl.fields]
    if missing or unknown:
        raise PromptError(
            f"template {name!r} takes fields {', '.join(tpl.fields)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    parts: list[TextPart | ImagePart] = []
    text = ""
    pos = 0
    for match in _PLACEHOLDER.finditer(tpl.body):
        text += tpl.body[pos : match.start()]
        pos = match.end()
        key = match.group(1)
        value = fields[key]
        if key in tpl.image_fields:
            if not isinstance(value, ImagePart):
                value = ImagePart(path=Path(value))
            if text:
                parts.append(TextPart(text=text))
            parts.append(value)
            text = ""
        else:
            if not isinstance(value, str):
                raise PromptError(f"template {name!r}: field {key!r} must be text")
            text += value
    text += tpl.body[pos:]
    if text:
        parts.append(TextPart(text=text))
    return [Message(role="user", content=tuple(parts))]


def render_request(
    name: str,
    sampling: SamplingParams | None = None,
    context: dict[str, str] | None = None,
    directory: Path | None = None,
    response_schema: dict | None = None,
    **fields: str | ImagePart | Path,
) -> Request:
    """A `Request` for template `name`, carrying its version and fields for the cache key
    (and the JSON schema its answer must follow, in the structured prompt mode)."""
    tpl = template(name, directory)
    return Request(
        messages=tuple(render(name, directory, **fields)),
        sampling=sampling or SamplingParams(),
        template=name,
        template_version=tpl.version,
        fields={k: v for k, v in fields.items() if isinstance(v, str)},
        context=dict(context or {}),
        response_schema=response_schema,
    )


# --- §3.2.1: the item's multi-modal description -----------------------------------------

#: Line labels of a built description, in order. The catalogue engine reads them back.
DESCRIPTION_LABELS = ("Title", "Brand", "Categories", "Image", "Description")


def _clean(value) -> str:
    if value is None:
        return ""
    try:
        if value != value:  # NaN / pd.NA-like
            return ""
    except (TypeError, ValueError):
        return ""
    return " ".join(str(value).split())


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " ..."


def build_description(
    image_text: str | None,
    title=None,
    brand=None,
    categories=None,
    description=None,
    max_description_chars: int = 400,
) -> str:
    """The item's description for the later stages: one `Label: value` line per known field.

    `image_text` is what an image describer said about the picture (a VLM, or the
    feature-derived text of the visual engine); the textual metadata is the item's own.
    The source `description` is kept (truncated to `max_description_chars`) when given;
    pass None to follow the paper strictly (brand name and product title only).
    """
    values = {
        "Title": _clean(title),
        "Brand": _clean(brand),
        "Categories": _clean(categories),
        "Image": _clean(image_text),
        "Description": _truncate(_clean(description), max_description_chars),
    }
    lines = [f"{label}: {values[label]}" for label in DESCRIPTION_LABELS if values[label]]
    return "\n".join(lines)


def parse_description(text: str) -> dict[str, str]:
    """The labelled lines of a description made by `build_description` (others ignored)."""
    out = {}
    for line in text.splitlines():
        label, colon, value = line.partition(":")
        if colon and label.strip() in DESCRIPTION_LABELS:
            out.setdefault(label.strip(), value.strip())
    return out
