"""The catalogue engine: attribute masking and completion without an LLM.

It knows the catalogue it was built on (`Catalogue.from_items` over the items table) and
finds, in a description, the words that carry the item's attributes:

* **brand**: the item's own brand (its `Brand:` line), anywhere, any case; other catalogue
  brands where they appear with their exact spelling;
* **category**: the catalogue's category-path elements. Of the item's own path only the
  leaf is masked (the parents stay, so a completed path is still a path), and values most
  items share (roots, above `protect_df`) never are;
* **colour / material / pattern / shape**: closed English vocabularies (`lexicon.py`);
* **number**: specifications such as sizes, counts, years;
* **term**: the `salient_terms` words with the highest item-level TF-IDF among the rest,
  counting only words that at least 2 and at most `max_term_df` of the items use.

Masking replaces each such span by `[MASK]`. Completion aligns the masked text with its
source (the request's `context["source"]`; token alignment, so an LLM's masking works
too), types what each `[MASK]` hid, and fills in a contrasting value of the same type from
the catalogue, never the original: a sibling category (same parent), a brand sold in the
same leaf category, another colour/material/... the catalogue uses, a number with as many
digits, a salient word of the same leaf category. The same hidden value gets the same
substitute throughout one item, and choices are a stable hash of (seed, text, value), so
results are deterministic and a retry with another seed gives another negative.
Direct generation does both in one go (swap the values directly).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

import pandas as pd

from pipeline.config.generation import CatalogEngineConfig
from pipeline.llm.engines.base import Engine
from pipeline.llm.engines.visual import FEATURE_PREFIX
from pipeline.llm.lexicon import CORE_VALUES, LEXICONS, STOPWORDS
from pipeline.llm.prompts import MASK, TOKEN_PATTERN, parse_description
from pipeline.llm.types import Request, Result

VERSION = 1

_TOKEN = TOKEN_PATTERN
_LABEL = re.compile(r"\b[A-Za-z]+(?= ?:(?:\s|$))")  # "Brand:" — a word right before a colon
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_JOINABLE_GAP = re.compile(r"[^\w\n,;:|()\[\]{}]*")  # what may sit between the words of one phrase
_MASK_TOKEN = "\x00mask"
_TRAILING = ".,;:!?)]}'\" "
_MAX_PHRASE = 6
#: A catalogue category found in a text that is not the item's own is only taken for an
#: attribute value when at least this many items are filed under it (filters stray paths).
MIN_CATEGORY_ITEMS = 5
_PROBES = 64

#: Types in the order they win when one phrase could be several.
TYPES = ("brand", "category", "colour", "material", "pattern", "shape", "number", "term")


def split_categories(value) -> list[list[str]]:
    """Category paths of one item: `A, B | C, D` → [[A, B], [C, D]] (as the readers join them)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return []
    paths = []
    for path in str(value).split("|"):
        elements = [e.strip() for e in path.split(",") if e.strip()]
        if elements:
            paths.append(elements)
    return paths


def _words(text: str) -> list[str]:
    return [m.group().lower() for m in _TOKEN.finditer(text)]


def _number_shape(value: str) -> tuple[int, bool, bool]:
    """Numbers substitute for numbers that look alike: digits before the point, a leading
    zero ("07"), a fraction ("0.6")."""
    whole = re.split(r"[.,]", value)[0]
    return len(whole), len(whole) > 1 and whole.startswith("0"), whole != value


def _stable(*parts: object) -> int:
    raw = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def _is_term(word: str) -> bool:
    return len(word) >= 3 and word.isalpha() and word not in STOPWORDS


@dataclass
class Catalogue:
    """Vocabulary and statistics of one catalogue (the items table)."""

    n_items: int
    df: dict[str, int]
    categories: dict[tuple[str, ...], str]  # lower-case words → canonical element
    category_df: dict[str, int]
    siblings: dict[str, tuple[str, ...]]  # element → other children of its most common parent
    brands: tuple[str, ...]
    brand_exact: dict[tuple[str, ...], str]  # exact-case words → brand
    brands_by_leaf: dict[str, tuple[str, ...]]
    terms: tuple[str, ...]
    terms_by_leaf: dict[str, tuple[str, ...]]
    lexicon_seen: dict[str, tuple[str, ...]]  # type → its words the catalogue uses
    numbers: dict[tuple, tuple[str, ...]]  # _number_shape → numbers the catalogue uses
    phrases: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def from_items(cls, items: pd.DataFrame, max_term_df: float = 0.2) -> Catalogue:
        """Build from an items table (title, brand, categories, description; any missing)."""
        n = len(items)

        def col(name: str) -> list:
            return items[name].tolist() if name in items else [None] * n

        titles, brands_col, cats_col, descs = col("title"), col("brand"), col("categories"), col("description")
        df: Counter[str] = Counter()
        category_df: Counter[str] = Counter()
        spelling: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
        parent_count: dict[str, Counter[str]] = defaultdict(Counter)
        brand_count: Counter[str] = Counter()
        brands_by_leaf: dict[str, set[str]] = defaultdict(set)
        words_by_leaf: dict[str, set[str]] = defaultdict(set)
        numbers: dict[tuple, set[str]] = defaultdict(set)

        for title, brand, cats, desc in zip(titles, brands_col, cats_col, descs):
            text = " ".join(str(v) for v in (title, brand, cats, desc) if isinstance(v, str))
            words = set(_words(text))
            df.update(words)
            paths = split_categories(cats)
            elements = set()
            leaves = set()
            for path in paths:
                for depth, element in enumerate(path):
                    elements.add(element)
                    spelling[tuple(_words(element))][element] += 1
                    if depth:
                        parent_count[element][path[depth - 1]] += 1
                leaves.add(path[-1])
            category_df.update(elements)
            brand = brand.strip() if isinstance(brand, str) else ""
            if brand:
                brand_count[brand] += 1
                for leaf in leaves:
                    brands_by_leaf[leaf].add(brand)
            for w in words:
                if _NUMBER.fullmatch(w):
                    numbers[_number_shape(w)].add(w)
            for leaf in leaves:
                words_by_leaf[leaf].update(words)

        categories = {k: c.most_common(1)[0][0] for k, c in spelling.items() if k}
        category_words = {w for k in categories for w in k}
        brands = tuple(sorted(brand_count))
        brand_words = {w for b in brands for w in _words(b)}
        lexicon_words = {w for words in LEXICONS.values() for w in words}
        low, high = 2, max(2, int(max_term_df * n))

        def term_ok(w: str) -> bool:
            return (_is_term(w) and low <= df.get(w, 0) <= high and w not in category_words
                    and w not in brand_words and w not in lexicon_words)  # fmt: skip

        # Siblings: the other children of an element's most common parent (roots: other roots).
        parent = {e: c.most_common(1)[0][0] for e, c in parent_count.items()}
        children: dict[str | None, set[str]] = defaultdict(set)
        for element in category_df:
            children[parent.get(element)].add(element)
        siblings = {e: tuple(sorted(children[parent.get(e)] - {e})) for e in category_df}
        brand_exact = {}
        for b in brands:
            key = tuple(m.group() for m in _TOKEN.finditer(b))
            low_key = tuple(w.lower() for w in key)
            if key and len(b) >= 3 and low_key not in categories and not (
                len(low_key) == 1 and (low_key[0] in STOPWORDS or low_key[0] in lexicon_words)
            ):
                brand_exact[key] = b
        catalogue = cls(
            n_items=n,
            df=dict(df),
            categories=categories,
            category_df=dict(category_df),
            siblings=siblings,
            brands=brands,
            brand_exact=brand_exact,
            brands_by_leaf={k: tuple(sorted(v)) for k, v in brands_by_leaf.items()},
            terms=tuple(sorted(w for w in df if term_ok(w))),
            terms_by_leaf={k: tuple(sorted(w for w in v if term_ok(w))) for k, v in words_by_leaf.items()},
            lexicon_seen={t: tuple(sorted(w for w in words if w in df)) for t, words in LEXICONS.items()},
            numbers={k: tuple(sorted(v)) for k, v in numbers.items()},
        )
        catalogue.phrases = catalogue._phrase_table()
        return catalogue

    def _phrase_table(self) -> dict[tuple[str, ...], tuple[str, str]]:
        table: dict[tuple[str, ...], tuple[str, str]] = {}
        for kind in reversed(TYPES[2:6]):  # lexicon types; earlier types overwrite later ones
            for word in LEXICONS[kind]:
                table[tuple(word.split())] = (kind, word)
        for key, element in self.categories.items():
            table[key] = ("category", element)
        return table


@dataclass
class Span:
    t0: int  # first token
    t1: int  # one past the last token
    kind: str
    value: str
    maskable: bool = True
    extra: int = 0  # characters past the last token that belong to the value ("Inc.")


@dataclass
class _Parsed:
    text: str
    tokens: list[tuple[int, int, str]]  # (start, end, word)
    spans: list[Span]
    brand: str | None
    leaves: set[str]
    categories: set[str]


class CatalogEngine(Engine):
    """Masks / completes / swaps attribute values using a `Catalogue`."""

    kind = "catalog"
    TASKS = ("attribute_masking", "attribute_completion", "direct_generation")

    def __init__(self, catalogue: Catalogue, config: CatalogEngineConfig | None = None):
        super().__init__(f"catalog-v{VERSION}")
        self.catalogue = catalogue
        self.config = config or CatalogEngineConfig()
        self._canonical = set(catalogue.brands) | set(catalogue.category_df)

    @classmethod
    def from_items(cls, items: pd.DataFrame, config: CatalogEngineConfig | None = None) -> CatalogEngine:
        config = config or CatalogEngineConfig()
        return cls(Catalogue.from_items(items, config.max_term_df), config)

    @property
    def fingerprint(self) -> str:
        # The catalogue's statistics are deliberately left out: editing one item must not
        # invalidate every cached generation. Rebuild the cache folder to refresh them all.
        c = self.config
        swapped = "" if c.max_attributes is None else f"|types={c.max_attributes}"
        return f"{self.model}|terms={c.salient_terms}|max_df={c.max_term_df}|protect={c.protect_df}{swapped}"

    # -- the interface ------------------------------------------------------------------

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        return [self._one(r) for r in requests]

    def _one(self, request: Request) -> Result:
        t0 = time.perf_counter()
        task, seed = request.template, request.sampling.seed
        try:
            if task == "attribute_masking":
                text = self.mask(request.fields["item_description"])
            elif task == "attribute_completion":
                text = self.complete(request.fields["masked_description"], request.context.get("source"), seed)
            elif task == "direct_generation":
                text = self.swap(request.fields["positive_attributes"], seed)
            else:
                return self._error(
                    f"catalog engine does not do {task!r} (it does {', '.join(self.TASKS)}; "
                    "describe images with the visual engine or a VLM)"
                )
        except KeyError as err:
            return self._error(f"catalog engine: request for {task!r} lacks field {err}")
        return Result(text=text, engine=self.kind, model=self.model, finish_reason="stop",
                      latency_s=time.perf_counter() - t0)  # fmt: skip

    # -- the three operations -------------------------------------------------------------

    def mask(self, text: str) -> str:
        """The description with its attribute values replaced by [MASK]."""
        parsed = self.parse(text)
        return self._rewrite(parsed, [(s, MASK) for s in self._chosen_spans(parsed)])

    def swap(self, text: str, seed: int = 0) -> str:
        """Direct generation: each attribute value replaced by a contrasting one."""
        parsed = self.parse(text)
        chosen: dict[tuple[str, str], str] = {}
        edits = []
        for span in self._chosen_spans(parsed):
            original = self._span_text(parsed, span)
            edits.append((span, self._substitute(span.kind, original, parsed, seed, chosen)))
        return self._rewrite(parsed, edits)

    def _chosen_spans(self, parsed: _Parsed) -> list[Span]:
        """The maskable spans, limited to `max_attributes` attribute types (a stable choice per text)."""
        spans = [s for s in parsed.spans if s.maskable]
        limit = self.config.max_attributes
        kinds = sorted({s.kind for s in spans}, key=lambda kind: _stable(parsed.text, kind))
        if limit is None or len(kinds) <= limit:
            return spans
        keep = set(kinds[:limit])
        return [s for s in spans if s.kind in keep]

    def complete(self, masked: str, source: str | None, seed: int = 0) -> str:
        """Fill each [MASK] of `masked` with a contrasting value of what it hid in `source`."""
        masks = [m for m in _TOKEN.finditer(masked) if m.group() == MASK]
        if not masks:
            return masked
        parsed = self.parse(source or "")
        hidden = self._align(parsed, masked) if source else []
        hidden += [None] * (len(masks) - len(hidden))
        chosen: dict[tuple[str, str], str] = {}
        out, pos = [], 0
        for m, what in zip(masks, hidden):
            kind, original = what or ("term", "")
            out.append(masked[pos : m.start()])
            out.append(self._substitute(kind, original, parsed, seed, chosen))
            pos = m.end()
        out.append(masked[pos:])
        return "".join(out)

    # -- finding attribute spans ---------------------------------------------------------

    def parse(self, text: str) -> _Parsed:
        """Tokens of `text` and its attribute spans (masked or kept), in order."""
        tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
        n = len(tokens)
        lower = [w.lower() for _, _, w in tokens]
        exact = [w for _, _, w in tokens]
        protected = _protected_tokens(text, tokens)
        joinable = [
            k + 1 < n and _JOINABLE_GAP.fullmatch(text[tokens[k][1] : tokens[k + 1][0]]) is not None
            for k in range(n)
        ]
        fields = parse_description(text)
        brand = fields.get("Brand") or None
        own_brand = tuple(_words(brand)) if brand else None
        paths = split_categories(fields.get("Categories"))
        leaves = {p[-1] for p in paths}
        own_categories = {e for p in paths for e in p}

        spans: list[Span] = []
        covered = [False] * n
        i = 0
        while i < n:
            if protected[i] or lower[i] == MASK.lower():
                i += 1
                continue
            longest = 1
            while longest < _MAX_PHRASE and i + longest < n and joinable[i + longest - 1]:
                longest += 1
            hit = None
            if own_brand and tuple(lower[i : i + len(own_brand)]) == own_brand and "\n" not in text[
                tokens[i][0] : tokens[i + len(own_brand) - 1][1]
            ]:  # the item's own brand, however long and whatever punctuation it has
                hit, length = ("brand", brand), len(own_brand)
            else:
                hit, length = self._phrase_at(i, longest, lower, exact, own_categories)
            if hit is None and _NUMBER.fullmatch(lower[i]):
                hit, length = ("number", lower[i]), 1
            if hit is None:
                i += 1
                continue
            kind, value = hit
            span = Span(i, i + length, kind, value, self._maskable(kind, value, leaves, own_categories))
            tail = value[len(value.rstrip(_TRAILING)) :]
            if kind == "brand" and tail and text.startswith(tail, tokens[i + length - 1][1]):
                span.extra = len(tail)
            spans.append(span)
            for k in range(i, i + length):
                covered[k] = True
            i += length

        spans.extend(self._salient_terms(lower, covered, protected))
        spans.sort(key=lambda s: s.t0)
        if not any(s.maskable for s in spans):
            spans = self._fallback(spans, lower, covered, protected)
        return _Parsed(text, tokens, spans, brand, leaves, own_categories)

    def _phrase_at(self, i: int, longest: int, lower: list[str], exact: list[str],
                   own_categories: set[str]) -> tuple[tuple[str, str] | None, int]:  # fmt: skip
        """The longest catalogue phrase (brand, category, lexicon word) starting at token i."""
        cat = self.catalogue
        for length in range(longest, 0, -1):
            words = tuple(exact[i : i + length])
            if words in cat.brand_exact:
                return ("brand", cat.brand_exact[words]), length
            hit = cat.phrases.get(tuple(lower[i : i + length]))
            if hit is None:
                continue
            rare = cat.category_df.get(hit[1], 0) < MIN_CATEGORY_ITEMS
            if hit[0] == "category" and hit[1] not in own_categories and rare:
                continue
            return hit, length
        return None, 1

    def _maskable(self, kind: str, value: str, leaves: set[str], own: set[str]) -> bool:
        cat = self.catalogue
        if kind == "brand":
            return len(cat.brands) >= 2
        if kind == "category":
            if value in own and value not in leaves:
                return False  # a parent in the item's own path: keep the path coherent
            if cat.category_df.get(value, 0) > self.config.protect_df * cat.n_items:
                return False
            return bool(cat.siblings.get(value)) or len(cat.category_df) >= 2
        return True

    def _salient_terms(self, lower: list[str], covered: list[bool], protected: list[bool]) -> list[Span]:
        k = self.config.salient_terms
        if not k:
            return []
        cat = self.catalogue
        high = max(2, int(self.config.max_term_df * cat.n_items))
        counts: Counter[str] = Counter()
        for w, c, p in zip(lower, covered, protected):
            if not c and not p and _is_term(w) and 2 <= cat.df.get(w, 0) <= high:
                counts[w] += 1
        if not counts:
            return []
        log_n = math.log(cat.n_items + 1)
        scored = sorted(counts, key=lambda w: (-counts[w] * (log_n - math.log(cat.df[w])), w))
        chosen = set(scored[:k])
        return [
            Span(i, i + 1, "term", w)
            for i, w in enumerate(lower)
            if w in chosen and not covered[i] and not protected[i]
        ]

    def _fallback(self, spans: list[Span], lower: list[str], covered: list[bool], protected: list[bool]) -> list[Span]:
        """No attribute found: mask the longest content word (any frequency)."""
        free = [i for i, w in enumerate(lower) if not covered[i] and not protected[i] and w != MASK.lower()]
        content = [i for i in free if _is_term(lower[i])] or [i for i in free if lower[i] not in STOPWORDS] or free
        if not content:
            return spans
        best = max(content, key=lambda i: (len(lower[i]), -i))
        kind = "number" if _NUMBER.fullmatch(lower[best]) else "term"
        return sorted([*spans, Span(best, best + 1, kind, lower[best])], key=lambda s: s.t0)

    # -- alignment of a masked text with its source --------------------------------------

    def _align(self, parsed: _Parsed, masked: str) -> list[tuple[str, str] | None]:
        """(type, original text) hidden by each [MASK] of `masked`, in order."""
        src = [w.lower() for _, _, w in parsed.tokens]
        dst = [_MASK_TOKEN if m.group() == MASK else m.group().lower() for m in _TOKEN.finditer(masked)]
        span_at: dict[int, Span] = {}
        for span in parsed.spans:
            for k in range(span.t0, span.t1):
                span_at[k] = span
        hidden: list[tuple[str, str] | None] = []
        matcher = SequenceMatcher(None, src, dst, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            n_masks = sum(1 for t in dst[j1:j2] if t == _MASK_TOKEN)
            if not n_masks:
                continue
            # the hidden source words, one group per attribute span (other words: one each)
            groups: list[list[int]] = []
            for k in range(i1, i2) if op != "equal" else ():
                if groups and k in span_at and span_at.get(groups[-1][-1]) is span_at[k]:
                    groups[-1].append(k)
                else:
                    groups.append([k])
            if len(groups) > n_masks:  # fewer masks than hidden values: the last takes the rest
                groups = groups[: n_masks - 1] + [[k for g in groups[n_masks - 1 :] for k in g]]
            for g in groups:
                typed = next((span_at[k] for k in g if k in span_at), None)
                if typed is not None:  # several values under one mask: the first typed one leads
                    hidden.append((typed.kind, self._span_text(parsed, typed)))
                else:
                    original = parsed.text[parsed.tokens[g[0]][0] : parsed.tokens[g[-1]][1]]
                    hidden.append(("number" if _NUMBER.fullmatch(original) else "term", original))
            hidden.extend([None] * (n_masks - len(groups)))
        return hidden

    # -- choosing substitutes ------------------------------------------------------------

    def _pools(self, kind: str, value: str, parsed: _Parsed) -> list[Sequence[str]]:
        """Where substitutes for `value` come from, closest first (the first with a usable
        candidate wins): e.g. sibling categories, then any category."""
        cat = self.catalogue
        leaves = sorted(parsed.leaves)
        if kind == "brand":
            return [*(cat.brands_by_leaf.get(leaf, ()) for leaf in leaves), cat.brands]
        if kind == "category":
            canonical = cat.categories.get(tuple(_words(value)), value)
            common = tuple(c for c, n in sorted(cat.category_df.items())
                           if MIN_CATEGORY_ITEMS <= n <= self.config.protect_df * cat.n_items)  # fmt: skip
            return [cat.siblings.get(canonical, ()), common, tuple(sorted(cat.category_df))]
        if kind in LEXICONS:
            return [cat.lexicon_seen.get(kind, ()) if len(cat.lexicon_seen.get(kind, ())) >= 3 else (),
                    CORE_VALUES[kind], tuple(sorted(LEXICONS[kind]))]  # fmt: skip
        if kind == "number":
            return [cat.numbers.get(_number_shape(value), ())]
        return [*(cat.terms_by_leaf.get(leaf, ()) for leaf in leaves), cat.terms]

    def _substitute(self, kind: str, original: str, parsed: _Parsed, seed: int, chosen: dict) -> str:
        """A contrasting value for `original`; the same value gets the same one per item."""
        key = (kind, original.lower())
        if key not in chosen:
            chosen[key] = self._choose(kind, original, parsed, seed)
        canonical = kind in ("brand", "category") and original in self._canonical
        return chosen[key] if canonical else _match_case(original, chosen[key], kind)

    def _choose(self, kind: str, original: str, parsed: _Parsed, seed: int) -> str:
        present = {w.lower() for _, _, w in parsed.tokens}
        exclude = {original.lower()}
        if kind == "category":
            exclude |= {c.lower() for c in parsed.categories}
        elif kind == "brand" and parsed.brand:
            exclude.add(parsed.brand.lower())
        h = _stable(seed, parsed.text, kind, original.lower())
        pick = None
        for pool in self._pools(kind, original, parsed):
            pick = _pick(pool, exclude, present, h)
            if pick is not None:
                break
        if pick is None and kind == "number" and original.replace(".", "", 1).isdigit():
            pick = str(int(float(original)) + 1 + _stable(seed, original) % 9)
        if pick is None:  # nothing of that type to contrast with: any salient word
            pick = _pick(self.catalogue.terms, exclude, present, _stable(seed, parsed.text, original)) or "other"
        return pick

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _span_text(parsed: _Parsed, span: Span) -> str:
        return parsed.text[parsed.tokens[span.t0][0] : parsed.tokens[span.t1 - 1][1] + span.extra]

    @staticmethod
    def _rewrite(parsed: _Parsed, edits: Iterable[tuple[Span, str]]) -> str:
        out, pos = [], 0
        for span, replacement in sorted(edits, key=lambda e: e[0].t0):
            start, end = parsed.tokens[span.t0][0], parsed.tokens[span.t1 - 1][1] + span.extra
            out.append(parsed.text[pos:start])
            out.append(replacement)
            pos = end
        out.append(parsed.text[pos:])
        return "".join(out)


def _protected_tokens(text: str, tokens: list[tuple[int, int, str]]) -> list[bool]:
    """Labels ("Brand:", "Colours:") and the visual marker are structure, never values."""
    ranges = [(m.start(), m.end()) for m in _LABEL.finditer(text)]
    start = text.find(FEATURE_PREFIX)
    while start >= 0:
        ranges.append((start, start + len(FEATURE_PREFIX)))
        start = text.find(FEATURE_PREFIX, start + 1)
    if not ranges:
        return [False] * len(tokens)
    return [any(a <= s < b for a, b in ranges) for s, _, _ in tokens]


def _pick(pool: Sequence[str], exclude: set[str], present: set[str], h: int) -> str | None:
    """A stable pseudo-random element of `pool` not excluded (and preferably not present)."""
    if not pool:
        return None
    n = len(pool)
    fallback = None
    for probe in range(min(n, _PROBES)):
        value = pool[(h + probe * 7919) % n]
        low = value.lower()
        if low in exclude:
            continue
        if low not in present:
            return value
        fallback = fallback or value
    if fallback is None and n > _PROBES:
        fallback = next((v for v in pool if v.lower() not in exclude), None)
    return fallback


def _match_case(original: str, value: str, kind: str) -> str:
    if not original:
        return value
    if kind in ("brand", "category"):
        return value.lower() if original.islower() else value
    if original.isupper() and len(original) > 1:
        return value.upper()
    if original[0].isupper():
        return value[:1].upper() + value[1:]
    return value.lower()
