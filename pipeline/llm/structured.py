"""The structured prompt mode: the model does not rewrite the text, it names edits as JSON
constrained by a schema, and the code applies them.

| stage | the model answers | the code |
|---|---|---|
| `masked` | `{"mask": [words of the description]}` | replaces every occurrence of those words by [MASK] |
| `negative` | `{"replacements": [one value per [MASK], in order]}` | puts each value where its [MASK] is |
| `direct` | `{"swaps": [{"word": w, "replacement": r}, ...]}` | replaces every occurrence of each word |

Free text (the paper's prompts) asks a model to copy a whole description back with a few
words changed, which small models cannot do (SmolLM2-135M copies [MASK] back or rambles).
Here the copy is the code's job: the schema lists the description's maskable words (an enum,
so a constrained decoder can only pick words that are there) and bounds every replacement
(its characters, and its length so that a completion stays within the validator's length
range), and `apply_*` turns the answer into a text of the form a free-text answer has. The
validators of `validate.py` then judge that text exactly as they judge free text. The schema
travels with the request (`Request.response_schema`): the `transformers` engine decodes under
it (`constrained.py`), `openai` and `vllm` hand it to their server's structured outputs.
The completion prompt shows each [MASK] as a ___ blank (see `as_blanks`).

Maskable words: the description's words (`prompts.TOKEN_PATTERN`) except line labels
("Brand:", "Colours:"; a word right before a colon), the visual describer's
"[from image features]" marker and stop words; one entry per word whatever its case
("Ceramic" and "ceramic" are one attribute value, masked everywhere).

An answer the code cannot apply (not JSON, the wrong shape, a word that is not a maskable word
of the description, a count of replacements that is not the count of [MASK]s, an empty value)
is an `Edit` with the reason, recorded and retried like an invalid free-text output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pipeline.llm.engines.visual import FEATURE_PREFIX
from pipeline.llm.lexicon import STOPWORDS
from pipeline.llm.prompts import MASK, TOKEN_PATTERN

#: At most this many words are masked (or swapped) per item: the paper masks the key words,
#: not the whole text, and a bound keeps every answer short.
MAX_EDITED_WORDS = 6
#: Characters a replacement may use: it starts with a letter or digit, then words, numbers,
#: spaces and the punctuation inside names ("O'Neil", "Hi-Fi", "B&W", "No. 5"); no commas (they
#: separate category path elements), no brackets, underscores, quotes or line breaks (so it
#: cannot echo the prompt's ___ blanks or [MASK]).
REPLACEMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 '&.\-]*$"
MAX_REPLACEMENT_CHARS = 20
MIN_REPLACEMENT_CHARS = 3
BLANK = "___"
_LABEL_AFTER = re.compile(r" ?:(?:\s|$)")


@dataclass(frozen=True)
class Edit:
    """The text an answer's edits produce, or why they could not be applied."""

    text: str | None = None
    reason: str | None = None

    @classmethod
    def failed(cls, reason: str) -> Edit:
        return cls(reason=f"structured answer: {reason}")


def _maskable_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, word) of every maskable word occurrence in `text`."""
    hidden = [(m.start(), m.end()) for m in re.finditer(re.escape(FEATURE_PREFIX), text)]
    spans = []
    for match in TOKEN_PATTERN.finditer(text):
        word = match.group()
        if word == MASK or word.lower() in STOPWORDS:
            continue
        if _LABEL_AFTER.match(text, match.end()):
            continue
        if any(start <= match.start() < end for start, end in hidden):
            continue
        spans.append((match.start(), match.end(), word))
    return spans


def maskable_words(text: str) -> list[str]:
    """The words of `text` a structured answer may name, in order of first appearance, one
    spelling per word (the first)."""
    seen: dict[str, str] = {}
    for _, _, word in _maskable_spans(text):
        seen.setdefault(word.lower(), word)
    return list(seen.values())


def _object(key: str, value: dict) -> dict:
    return {"type": "object", "properties": {key: value}, "required": [key], "additionalProperties": False}


def _replacement(max_chars: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": REPLACEMENT_PATTERN}


def masking_schema(words: list[str]) -> dict:
    """`{"mask": [1 to MAX_EDITED_WORDS distinct words of `words`]}`."""
    return _object("mask", {"type": "array", "items": {"type": "string", "enum": words}, "minItems": 1,
                            "maxItems": min(MAX_EDITED_WORDS, len(words)), "uniqueItems": True})  # fmt: skip


def completion_schema(masked: str) -> dict:
    """`{"replacements": [exactly one bounded value per [MASK]]}`.

    Length bound: each [MASK] hid at least one character, so the source is at least
    kept + n long (kept: the template's characters outside the n masks). Values of at most
    (kept + 2n) / n characters keep the completion within 2x that, the validator's upper bound.
    """
    n = masked.count(MASK)
    kept = len(masked) - n * len(MASK)
    longest = max(MIN_REPLACEMENT_CHARS, min(MAX_REPLACEMENT_CHARS, (kept + 2 * n) // max(1, n)))
    return _object("replacements", {"type": "array", "items": _replacement(longest), "minItems": n, "maxItems": n})


def direct_schema(source: str, words: list[str]) -> dict:
    """`{"swaps": [{"word": a maskable word, "replacement": a bounded value}, ...]}`.

    Length bound: the swapped words' occurrences, at most the most frequent MAX_EDITED_WORDS
    words' count, each grow by at most one value, so values of len(source) / that count
    characters keep the negative within 2x the source.
    """
    counts = sorted((sum(1 for _, _, w in _maskable_spans(source) if w.lower() == word.lower()) for word in words),
                    reverse=True)  # fmt: skip
    most = max(1, sum(counts[:MAX_EDITED_WORDS]))
    longest = max(MIN_REPLACEMENT_CHARS, min(MAX_REPLACEMENT_CHARS, len(source) // most))
    swap = {"type": "object", "properties": {"word": {"type": "string", "enum": words}, "replacement": _replacement(longest)},
            "required": ["word", "replacement"], "additionalProperties": False}  # fmt: skip
    return _object("swaps", {"type": "array", "items": swap, "minItems": 1, "maxItems": min(MAX_EDITED_WORDS, len(words))})


def as_blanks(masked: str) -> str:
    """The template as the structured completion prompt shows it: each [MASK] a ___ blank.
    Small models shown [MASK] answer "MASK" or "Masks"; a blank they cannot echo (the
    replacement pattern has no underscore)."""
    return masked.replace(MASK, BLANK)


# -- applying answers -----------------------------------------------------------------------


def _list_of(answer: str, key: str) -> list | Edit:
    try:
        data = json.loads(answer)
    except (ValueError, RecursionError) as err:  # RecursionError: JSON nested thousands deep
        return Edit.failed(f"not JSON ({err})")
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        return Edit.failed(f"not an object with a `{key}` list")
    if not data[key]:
        return Edit.failed(f"the `{key}` list is empty")
    return data[key]


def _replace_words(text: str, new_of: dict[str, str]) -> str:
    """`text` with every maskable occurrence of each word (any case) replaced by `new_of[word]`."""
    out, pos = [], 0
    for start, end, word in _maskable_spans(text):
        new = new_of.get(word.lower())
        if new is not None:
            out += [text[pos:start], new]
            pos = end
    return "".join(out) + text[pos:]


def _unknown(words: list[str], text: str) -> list[str]:
    known = {w.lower() for w in maskable_words(text)}
    return [w for w in words if w.strip().lower() not in known]


def apply_masking(description: str, answer: str) -> Edit:
    """The description with the words `answer` names ({"mask": [...]}) replaced by [MASK]."""
    words = _list_of(answer, "mask")
    if isinstance(words, Edit):
        return words
    if not all(isinstance(w, str) for w in words):
        return Edit.failed("the `mask` list holds something other than words")
    unknown = _unknown(words, description)
    if unknown:
        return Edit.failed(f"names word(s) that are not maskable words of the description: {unknown[:5]}")
    return Edit(text=_replace_words(description, {w.strip().lower(): MASK for w in words}))


def apply_completion(masked: str, answer: str) -> Edit:
    """The template with each [MASK] replaced by its value from `answer` ({"replacements": [...]})."""
    values = _list_of(answer, "replacements")
    if isinstance(values, Edit):
        return values
    n = masked.count(MASK)
    if len(values) != n:
        return Edit.failed(f"{len(values)} replacement(s) for {n} [MASK](s)")
    for i, value in enumerate(values, 1):
        if not isinstance(value, str) or not value.strip():
            return Edit.failed(f"replacement {i} is empty or not text: {value!r}")
    parts = masked.split(MASK)
    return Edit(text="".join(part + (values[i].strip() if i < n else "") for i, part in enumerate(parts)))


def apply_direct(source: str, answer: str) -> Edit:
    """The source with each word `answer` names replaced by its value ({"swaps": [...]}); a
    word named twice keeps its first value."""
    swaps = _list_of(answer, "swaps")
    if isinstance(swaps, Edit):
        return swaps
    pairs = []
    for i, swap in enumerate(swaps, 1):
        if not (isinstance(swap, dict) and isinstance(swap.get("word"), str) and isinstance(swap.get("replacement"), str)):
            return Edit.failed(f"swap {i} is not {{\"word\": ..., \"replacement\": ...}}")
        if not swap["replacement"].strip():
            return Edit.failed(f"swap {i} has an empty replacement")
        pairs.append((swap["word"], swap["replacement"].strip()))
    unknown = _unknown([w for w, _ in pairs], source)
    if unknown:
        return Edit.failed(f"names word(s) that are not maskable words of the description: {unknown[:5]}")
    new_of: dict[str, str] = {}
    for word, value in pairs:
        new_of.setdefault(word.strip().lower(), value)
    return Edit(text=_replace_words(source, new_of))
