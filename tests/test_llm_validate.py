"""Output checks, and what generate_stage does with invalid outputs: retry with a new seed,
then record a failure with its reason and last output — never drop an item silently."""

from __future__ import annotations

import pandas as pd

from pipeline.llm.run import FAILURE_COLUMNS, generate_stage
from pipeline.llm.testing import ScriptedEngine
from pipeline.llm.validate import (
    check_completion,
    check_description,
    check_direct,
    check_masked,
    clean_output,
    token_jaccard,
)

SOURCE = "Title: Norvik Cotton Bag\nBrand: Norvik\nDescription: A cotton bag from Norvik."
MASKED = "Title: [MASK] [MASK] Bag\nBrand: [MASK]\nDescription: A [MASK] bag from [MASK]."
NEGATIVE = "Title: Vantoo Linen Bag\nBrand: Vantoo\nDescription: A linen bag from Vantoo."


def test_masked_checks():
    assert check_masked(SOURCE, MASKED)
    assert check_masked(SOURCE, SOURCE).reason == "masked text contains no [MASK]"
    assert "lines" in check_masked(SOURCE, MASKED.replace("\n", " ")).reason
    assert "come from the source" in check_masked(SOURCE, "Title: [MASK] totally\nBrand: new\nDescription: words here").reason
    assert check_masked("Title: x y", "Title: [MASK]") and not check_masked("x y", "[MASK] [MASK]")


def test_completion_checks():
    assert check_completion(MASKED, NEGATIVE, SOURCE)
    assert "still contains [MASK]" in check_completion(MASKED, MASKED, SOURCE).reason
    assert "identical" in check_completion(MASKED, SOURCE.upper(), SOURCE).reason
    assert "lines" in check_completion(MASKED, NEGATIVE.replace("\n", " "), SOURCE).reason
    assert "length" in check_completion(MASKED, "Title: a\nBrand: b\nDescription: c", SOURCE).reason
    rewritten = "Title: Vantoo Linen Sack\nBrand: Vantoo\nDescription: The linen sack by Vantoo, new."
    assert "keeps only" in check_completion(MASKED, rewritten, SOURCE).reason


def test_direct_and_description_checks():
    assert check_direct(SOURCE, NEGATIVE)
    assert not check_direct(SOURCE, SOURCE) and not check_direct(SOURCE, MASKED)
    assert check_description("a red mug") and not check_description("  ") and not check_description("[MASK]")


def test_clean_output_and_similarity():
    assert clean_output("**Output:** A red mug") == "A red mug"
    assert clean_output("```\nA red mug\n```") == "A red mug"
    assert clean_output('"A red mug"') == "A red mug"
    assert token_jaccard("a red mug", "a blue mug") == 0.5 and token_jaccard("", "") == 1.0


def items(n=6):
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "description_text": [SOURCE] * n,
                         "masked_text": [MASKED] * n})  # fmt: skip


def test_invalid_outputs_are_retried_with_a_new_seed():
    # seed 0 answers without any [MASK]; seed 1 masks properly
    engine = ScriptedEngine(lambda r: SOURCE if r.sampling.seed == 0 else MASKED)
    run = generate_stage(items(), "masked", engine, batch_size=4, progress=False)
    assert run.failures.empty and len(run.outputs) == 6
    assert set(run.outputs["attempts"]) == {2}
    assert sorted({r.sampling.seed for r in engine.requests}) == [0, 1]
    assert run.meta["attempts"] == 12 and run.meta["ok"] == 6


def test_items_that_stay_invalid_or_fail_are_recorded_with_a_reason():
    def answer(request):
        raise ConnectionError("server went away")

    failing = ScriptedEngine(answer)
    run = generate_stage(items(3), "negative", failing, max_attempts=2, progress=False)
    assert run.outputs.empty and list(run.failures.columns) == FAILURE_COLUMNS
    assert run.failures["reason"].str.contains("engine error: ConnectionError: server went away").all()
    assert run.failures["last_output"].isna().all() and (run.failures["attempts"] == 2).all()

    echo = ScriptedEngine(lambda r: r.fields["masked_description"])  # never fills the masks
    run = generate_stage(items(3), "negative", echo, max_attempts=3, progress=False)
    assert len(run.failures) == 3 and run.failures["stage"].eq("negative").all()
    assert run.failures["reason"].eq("completion still contains [MASK]").all()
    assert run.failures["last_output"].eq(MASKED).all()
    assert run.meta["failed"] == 3 and run.meta["attempts"] == 9

    # a mix: only the bad items fail, the others come through
    mixed = ScriptedEngine(lambda r: NEGATIVE if r.context["source"] == SOURCE else "")
    frame = items(4)
    frame.loc[1, "description_text"] = "Title: other\nBrand: x\nDescription: y"
    run = generate_stage(frame, "negative", mixed, progress=False)
    assert run.outputs["item_id"].tolist() == ["i0", "i2", "i3"] and run.failures["item_id"].tolist() == ["i1"]
