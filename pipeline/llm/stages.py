"""The four generation stages, each described once: its name, the table it writes, its prompt
templates, the earlier stages whose outputs it reads, the engine that answers it, how it asks
(free text or structured), how a structured answer becomes its text, and how that text is
checked. Every module that runs, stores, checks or orchestrates a stage reads this description
(run.py, pipeline/generation.py, assets/generation.py); none names a stage's parts again.

| stage | table | template | reads | engine |
|---|---|---|---|---|
| `description` | item_descriptions | description_generation | the item's picture and metadata | describer |
| `masked` | masked_descriptions | attribute_masking | `description` | generator |
| `negative` | negative_descriptions | attribute_completion | `description`, `masked` | generator |
| `direct` | direct_negatives | direct_generation | `description` | generator |

An earlier stage's output reaches a stage as the column `<stage>_text` (`text_column`; see
run.join_texts). The generator's stages also have a structured template (`*_structured`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from pipeline.llm.prompts import MASK, build_description, render_request
from pipeline.llm.structured import (
    Edit,
    apply_completion,
    apply_direct,
    apply_masking,
    as_blanks,
    completion_schema,
    direct_schema,
    maskable_words,
    masking_schema,
)
from pipeline.llm.types import ImagePart, Request, SamplingParams
from pipeline.llm.validate import Verdict, check_completion, check_description, check_direct, check_masked
from pipeline.tables import DIRECT_NEGATIVES, ITEM_DESCRIPTIONS, MASKED_DESCRIPTIONS, NEGATIVE_DESCRIPTIONS


def text_column(stage: str) -> str:
    """The column that carries `stage`'s output into a later stage: description_text, masked_text."""
    return f"{stage}_text"


def value(row: dict, name: str):
    """`row[name]`, None where it is absent or missing (None, NaN, pd.NA)."""
    found = row.get(name)
    return None if found is None or found is pd.NA or (isinstance(found, float) and found != found) else found


class GenerationStage:
    """One stage. `source` is the item's description (the `description` stage's output) and
    `masked` its [MASK] template (the `masked` stage's output), where the stage reads them."""

    name: str  # in the cache's failures, the metadata and `failed_at`
    table: str
    template: str
    structured_template: str | None = None
    reads: tuple[str, ...] = ()  # earlier stages, in the order of join_texts' arguments
    engine: Literal["describer", "generator"] = "generator"
    writes_negative: bool = True  # its output is a negative of `source` (its similarity is reported)
    extra_columns: tuple[str, ...] = ()  # written besides run.OUTPUT_COLUMNS
    summary: str  # what it does, with the paper's section (the asset's description)

    def request(self, row: dict, source: str, masked: str, sampling: SamplingParams,
                prompts_dir: Path | None) -> Request | None:  # fmt: skip
        """The free-text request for one item (None: nothing to ask; see Description)."""
        raise NotImplementedError

    def structured_request(self, source: str, masked: str, sampling: SamplingParams,
                           prompts_dir: Path | None) -> tuple[Request | None, str | None]:  # fmt: skip
        """The structured request for one item, or why there can be none."""
        raise ValueError(f"stage {self.name!r} has no structured mode")

    def apply(self, answer: str, source: str, masked: str) -> Edit:
        """The text a structured answer makes."""
        raise ValueError(f"stage {self.name!r} has no structured mode")

    def check(self, output: str, source: str, masked: str) -> Verdict:
        raise NotImplementedError

    def output(self, row: dict, text: str | None, keep_source_description: bool) -> dict:
        """The text columns of one item's output row (`text`: the engine's valid answer)."""
        return {"text": text}

    def __repr__(self) -> str:
        return f"<generation stage {self.name}: {self.table}>"


def _no_maskable_word(source: str) -> list[str] | str:
    words = maskable_words(source)
    return words or "structured answer: the description has no maskable word"


class Description(GenerationStage):
    """Items with a usable picture are described by the describer; the others get their textual
    metadata alone (no request: engine `none`, 0 attempts)."""

    name = "description"
    table = ITEM_DESCRIPTIONS
    template = "description_generation"
    engine = "describer"
    writes_negative = False
    summary = ("§3.2.1 Description Generation: the image described as text (by the configured describer; "
               "feature-derived text is labelled so) merged with title, brand and categories.")  # fmt: skip

    extra_columns = ("image_text",)

    def request(self, row, source, masked, sampling, prompts_dir):
        path, status = row.get("image_path"), value(row, "image_status")
        if not (isinstance(path, str) and path and status in (None, "ok")):
            return None
        return render_request(self.template, sampling, directory=prompts_dir, item_image=ImagePart(path=Path(path)))

    def check(self, output, source, masked):
        return check_description(output)

    def output(self, row, text, keep_source_description):
        """The describer's text (None without a picture) merged with the item's metadata."""
        return {
            "image_text": text,
            "text": build_description(
                text, value(row, "title"), value(row, "brand"), value(row, "categories"),
                value(row, "description") if keep_source_description else None,
            ),
        }  # fmt: skip


class Masking(GenerationStage):
    name = "masked"
    table = MASKED_DESCRIPTIONS
    template = "attribute_masking"
    structured_template = "attribute_masking_structured"
    reads = ("description",)
    writes_negative = False
    summary = "§3.2.2 Attribute Masking: key attributes of each description replaced by [MASK]."

    def request(self, row, source, masked, sampling, prompts_dir):
        return render_request(self.template, sampling, directory=prompts_dir, item_description=source)

    def structured_request(self, source, masked, sampling, prompts_dir):
        words = _no_maskable_word(source)
        if isinstance(words, str):
            return None, words
        return render_request(self.structured_template, sampling, directory=prompts_dir,
                              response_schema=masking_schema(words), item_description=source), None  # fmt: skip

    def apply(self, answer, source, masked):
        return apply_masking(source, answer)

    def check(self, output, source, masked):
        return check_masked(source, output)


class Completion(GenerationStage):
    """The request carries the source description as context (the catalog engine reads it)."""

    name = "negative"
    table = NEGATIVE_DESCRIPTIONS
    template = "attribute_completion"
    structured_template = "attribute_completion_structured"
    reads = ("description", "masked")
    summary = "§3.2.3 Attribute Completion: each [MASK] filled with a contrasting value — the item's negative."

    def request(self, row, source, masked, sampling, prompts_dir):
        return render_request(self.template, sampling, context={"source": source}, directory=prompts_dir,
                              masked_description=masked)  # fmt: skip

    def structured_request(self, source, masked, sampling, prompts_dir):
        if MASK not in masked:
            return None, "structured answer: the masked text has no [MASK] to complete"
        return render_request(self.structured_template, sampling, context={"source": source}, directory=prompts_dir,
                              response_schema=completion_schema(masked), masked_description=as_blanks(masked)), None  # fmt: skip

    def apply(self, answer, source, masked):
        return apply_completion(masked, answer)

    def check(self, output, source, masked):
        return check_completion(masked, output, source)


class DirectGeneration(GenerationStage):
    name = "direct"
    table = DIRECT_NEGATIVES
    template = "direct_generation"
    structured_template = "direct_generation_structured"
    reads = ("description",)
    summary = "§2.1 Direct Generation: a negative written in one step from the positive attributes (the paper's baseline)."

    def request(self, row, source, masked, sampling, prompts_dir):
        return render_request(self.template, sampling, directory=prompts_dir, positive_attributes=source)

    def structured_request(self, source, masked, sampling, prompts_dir):
        words = _no_maskable_word(source)
        if isinstance(words, str):
            return None, words
        return render_request(self.structured_template, sampling, directory=prompts_dir,
                              response_schema=direct_schema(source, words), positive_attributes=source), None  # fmt: skip

    def apply(self, answer, source, masked):
        return apply_direct(source, answer)

    def check(self, output, source, masked):
        return check_direct(source, output)


#: Stage name → its description, in the order they run (each stage's inputs come before it).
STAGES: dict[str, GenerationStage] = {s.name: s for s in (Description(), Masking(), Completion(), DirectGeneration())}
#: Table (and asset) → its stage.
STAGE_OF_TABLE: dict[str, GenerationStage] = {s.table: s for s in STAGES.values()}
#: Stage → the template of its structured prompt (prompts/*_structured.md).
STRUCTURED_TEMPLATES = {s.name: s.structured_template for s in STAGES.values() if s.structured_template}


def stage(name: str) -> GenerationStage:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None


def check(stage_name: str, output: str, source: str = "", masked: str = "") -> Verdict:
    """The check of stage `stage_name` ("description" | "masked" | "negative" | "direct")."""
    return stage(stage_name).check(output, source, masked)


def apply_answer(stage_name: str, answer: str, source: str, masked: str = "") -> Edit:
    """The text a structured answer of `stage_name` makes (`source`: the item's description;
    `masked`: its [MASK] template, for `negative`)."""
    return stage(stage_name).apply(answer, source, masked)
