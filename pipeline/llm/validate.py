"""Checks on generated text. Each returns a `Verdict`; an invalid output is retried (with
another seed) by `run.generate_stage`, and recorded as a failure with the reason once the
attempts are spent. Each stage names its check in `stages.py` (`stages.check` by stage name).

* description: non-empty, no [MASK].
* masked: at least one [MASK]; same number of lines as the source; the words outside the
  masks are (mostly) the source's own words, and some remain.
* negative (completion): no [MASK]; differs from the source; same number of lines as the
  masked template; length within `LENGTH_RATIO` of the source; the template's words
  outside the masks are (mostly) kept.
* direct: no [MASK]; differs from the source; same number of lines; length within range.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from pipeline.llm.prompts import MASK, TOKEN_PATTERN

LENGTH_RATIO = (0.5, 2.0)
MIN_KEPT = 0.7  # share of the template's non-mask words a completion must keep
MIN_FROM_SOURCE = 0.8  # share of a masked text's non-mask words that must be the source's
_FENCE = re.compile(r"^```[\w-]*\n(.*?)\n?```$", re.S)
_OUTPUT_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:output|masked description|generated description|"
                            r"negative attributes|completed description)(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.I)  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.ok


VALID = Verdict(True)


def clean_output(text: str) -> str:
    """Strip what chat models wrap answers in: code fences, an `Output:` label, quotes."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    text = _OUTPUT_PREFIX.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def _words(text: str) -> list[str]:
    return [w.lower() for w in TOKEN_PATTERN.findall(text)]


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def _kept(template_words: list[str], text_words: list[str]) -> float:
    """Share of the template's non-mask words found in the text (as a multiset)."""
    need = Counter(w for w in template_words if w != MASK.lower())
    if not need:
        return 1.0
    have = Counter(text_words)
    return sum(min(c, have[w]) for w, c in need.items()) / sum(need.values())


def _length_ok(text: str, source: str) -> Verdict:
    lo, hi = LENGTH_RATIO
    ratio = len(text) / max(1, len(source))
    if not lo <= ratio <= hi:
        return Verdict(False, f"length {len(text)} is {ratio:.2f}x the source's {len(source)} (allowed {lo}-{hi}x)")
    return VALID


def check_description(text: str) -> Verdict:
    if not text.strip():
        return Verdict(False, "empty description")
    if MASK in text:
        return Verdict(False, "description contains [MASK]")
    return VALID


def check_masked(source: str, masked: str) -> Verdict:
    if MASK not in masked:
        return Verdict(False, "masked text contains no [MASK]")
    if _lines(masked) != _lines(source):
        return Verdict(False, f"masked text has {_lines(masked)} lines, the source {_lines(source)}")
    words, src = _words(masked), _words(source)
    rest = [w for w in words if w != MASK.lower()]
    if len(src) >= 2 and not rest:
        return Verdict(False, "everything is masked")
    share = _kept(words, src)
    if share < MIN_FROM_SOURCE:
        return Verdict(False, f"only {share:.0%} of the unmasked words come from the source")
    return VALID


def check_completion(masked: str, completion: str, source: str) -> Verdict:
    if MASK in completion:
        return Verdict(False, "completion still contains [MASK]")
    if _same(completion, source):
        return Verdict(False, "completion is identical to the source")
    if _lines(completion) != _lines(masked):
        return Verdict(False, f"completion has {_lines(completion)} lines, the template {_lines(masked)}")
    length = _length_ok(completion, source)
    if not length:
        return length
    share = _kept(_words(masked), _words(completion))
    if share < MIN_KEPT:
        return Verdict(False, f"completion keeps only {share:.0%} of the template's unmasked words")
    return VALID


def check_direct(source: str, negative: str) -> Verdict:
    if MASK in negative:
        return Verdict(False, "negative contains [MASK]")
    if _same(negative, source):
        return Verdict(False, "negative is identical to the source")
    if _lines(negative) != _lines(source):
        return Verdict(False, f"negative has {_lines(negative)} lines, the source {_lines(source)}")
    return _length_ok(negative, source)


def token_jaccard(a: str, b: str) -> float:
    """|A ∩ B| / |A ∪ B| over the lower-case word sets of two texts (1.0 for two empties)."""
    sa, sb = set(_words(a)), set(_words(b))
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)
