"""Constrained decoding for the `transformers` engine: a JSON schema (the small subset the
structured prompt mode writes) compiled to a byte automaton, and at every decoding step the
tokens that keep the output a prefix of an answer the schema accepts.

The same schema goes to the `openai` engine (`response_format`) and to the `vllm` engine
(structured outputs), whose servers enforce it themselves; here it is enforced by masking the
logits of every other token to -inf, so even a 135M model writes a parseable answer.

Schema subset (anything else is a `SchemaError` naming where it sits):

* `object` with `properties`, every property `required`, `additionalProperties: false`;
  the keys come in the order the schema lists them;
* `array` with `items`, `minItems` (default 0), `maxItems` (required: every answer is
  bounded), and `uniqueItems` for arrays of enum strings;
* `string` with `enum`, or with `maxLength` (required), `minLength` and a `pattern` of the
  form `^[class]+$`, `^[class]*$` or `^[first][class]*$` (classes of printable ASCII without
  `"` and `\\`; without a pattern, that whole set).

Output layout is fixed: `{"key": value, "key2": value}`, `[a, b]`, no other whitespace; any
JSON reader takes it, and a fixed layout leaves the model only the choices that matter.

Token level: every token of the vocabulary is known by its bytes (byte-level BPE through
GPT-2's byte alphabet, SentencePiece through `▁` and `<0xNN>`), kept in a trie. The allowed
set of a state is found by walking the trie along the bytes the automaton accepts (cheap:
outside free strings only a few bytes are), memoised per state. Inside a free string most of
the vocabulary is allowed, so there the set is a vector test instead (the tokens made only of
the string's characters that still fit) plus the few tokens that close the string and go on
(`"`, `", "`, `"]}`, ...), checked once per distinct continuation. When the answer is
complete only end-of-sequence is allowed.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

QUOTE = ord('"')
#: What a string without a pattern may hold: printable ASCII except `"` and `\` (no escapes).
PRINTABLE = frozenset(range(0x20, 0x7F)) - {QUOTE, ord("\\")}
_SEPARATOR = b", "
_CLASS = r"\[((?:\\.|[^\]\\])+)\]"
_PATTERN = re.compile(rf"^\^(?:{_CLASS})?{_CLASS}([+*])\$$")


class SchemaError(ValueError):
    """A schema outside the subset this decoder enforces."""


# -- the byte automaton -------------------------------------------------------------------
#
# Every node is prefix-free (once a value is complete no byte may follow it inside the
# value), so composition is deterministic. States are hashable tuples, so allowed-token sets
# can be memoised per state.


class _Node:
    def start(self):
        raise NotImplementedError

    def step(self, state, byte: int):
        """The state after `byte`, or None when `byte` is not allowed."""
        raise NotImplementedError

    def done(self, state) -> bool:
        raise NotImplementedError

    def next_bytes(self, state) -> Iterable[int]:
        """A superset of the bytes `step` allows (prunes the vocabulary trie walk)."""
        raise NotImplementedError

    def string_run(self, state) -> tuple[_FreeString, int] | None:
        """(the free string being written, its length so far) when that is where `state` is."""
        return None


class _Literal(_Node):
    def __init__(self, text: bytes):
        self.text = text

    def start(self):
        return 0

    def step(self, state, byte):
        return state + 1 if self.text[state] == byte else None

    def done(self, state):
        return state == len(self.text)

    def next_bytes(self, state):
        return (self.text[state],)


class _Sequence(_Node):
    """Parts one after the other; state (part index, that part's state)."""

    def __init__(self, parts: Sequence[_Node]):
        self.parts = tuple(parts)

    def start(self):
        return (0, self.parts[0].start())

    def step(self, state, byte):
        index, inner = state
        part = self.parts[index]
        inner = part.step(inner, byte)
        if inner is None:
            return None
        if part.done(inner):
            index += 1
            return (index, self.parts[index].start() if index < len(self.parts) else None)
        return (index, inner)

    def done(self, state):
        return state[0] == len(self.parts)

    def next_bytes(self, state):
        return self.parts[state[0]].next_bytes(state[1])

    def string_run(self, state):
        return None if self.done(state) else self.parts[state[0]].string_run(state[1])


class _Enum(_Node):
    """A string that is one of `values`; state (values excluded by the array, bytes so far)."""

    def __init__(self, values: Sequence[str]):
        encoded = [json.dumps(v, ensure_ascii=False).encode("utf-8") for v in values]
        self.full = frozenset(encoded)
        self.by_prefix: dict[bytes, frozenset[bytes]] = {}
        for value in encoded:
            for end in range(len(value) + 1):
                self.by_prefix[value[:end]] = self.by_prefix.get(value[:end], frozenset()) | {value}
        self.next: dict[bytes, frozenset[int]] = {
            prefix: frozenset(v[len(prefix)] for v in values_ if len(v) > len(prefix))
            for prefix, values_ in self.by_prefix.items()
        }  # fmt: skip

    def start(self, excluded: frozenset[bytes] = frozenset()):
        return (excluded, b"")

    def step(self, state, byte):
        excluded, prefix = state
        prefix += bytes((byte,))
        values = self.by_prefix.get(prefix)
        if not values or values <= excluded:
            return None
        return (excluded, prefix)

    def done(self, state):
        return state[1] in self.full

    def next_bytes(self, state):
        return self.next[state[1]]


class _FreeString(_Node):
    """`"` + between `min_length` and `max_length` bytes + `"`: the first of `first` (when set),
    the others of `chars`; state: -1 before the opening quote, n >= 0 bytes written, -2 closed."""

    def __init__(self, first: frozenset[int] | None, chars: frozenset[int], min_length: int, max_length: int):
        self.first, self.chars, self.min_length, self.max_length = first, chars, min_length, max_length
        self._content = tuple(sorted(chars))
        self._first = tuple(sorted(first)) if first is not None else self._content

    def chars_at(self, written: int) -> frozenset[int]:
        return self.first if written == 0 and self.first is not None else self.chars

    def filler(self, written: int, count: int) -> bytes:
        """`count` bytes the string may hold after `written` (to reach its minimum length)."""
        return bytes(self._first[0] if written + i == 0 else self._content[0] for i in range(count))

    def start(self):
        return -1

    def step(self, state, byte):
        if state == -1:
            return 0 if byte == QUOTE else None
        if state < 0:
            return None
        if byte == QUOTE:
            return -2 if state >= self.min_length else None
        return state + 1 if byte in self.chars_at(state) and state < self.max_length else None

    def done(self, state):
        return state == -2

    def next_bytes(self, state):
        if state == -1:
            return (QUOTE,)
        content = (self._first if state == 0 else self._content) if state < self.max_length else ()
        return (*content, *((QUOTE,) if state >= self.min_length else ()))

    def string_run(self, state):
        return (self, state) if state >= 0 else None


class _Array(_Node):
    """`[` items separated by `, ` `]`. States: ("[",), ("first", chosen) right after `[` when
    the array may be empty, ("item", n, chosen, item state), ("sep", n, chosen, k) after n items
    with k bytes of the separator read, ("end",). `chosen`: the enum values taken so far, when
    items must be unique."""

    def __init__(self, item: _Node, min_items: int, max_items: int, unique: bool):
        self.item, self.min_items, self.max_items, self.unique = item, min_items, max_items, unique

    def _item_start(self, chosen):
        return self.item.start(chosen) if self.unique else self.item.start()

    def start(self):
        return ("[",)

    def _enter(self, n, chosen, byte):
        inner = self.item.step(self._item_start(chosen), byte)
        if inner is None:
            return None
        return self._after_item_byte(n, chosen, inner)

    def _after_item_byte(self, n, chosen, inner):
        if self.item.done(inner):
            return ("sep", n + 1, chosen | {inner[1]} if self.unique else chosen, 0)
        return ("item", n, chosen, inner)

    def step(self, state, byte):
        tag = state[0]
        if tag == "[":
            if byte != ord("["):
                return None
            return ("first", frozenset()) if self.min_items == 0 else ("item", 0, frozenset(), self._item_start(frozenset()))
        if tag == "first":
            return ("end",) if byte == ord("]") else self._enter(0, state[1], byte)
        if tag == "item":
            _, n, chosen, inner = state
            inner = self.item.step(inner, byte)
            return None if inner is None else self._after_item_byte(n, chosen, inner)
        if tag == "sep":
            _, n, chosen, k = state
            if k == 0 and byte == ord("]"):
                return ("end",) if n >= self.min_items else None
            if k == 0 and n >= self.max_items:
                return None
            if byte != _SEPARATOR[k]:
                return None
            if k + 1 == len(_SEPARATOR):
                return ("item", n, chosen, self._item_start(chosen))
            return ("sep", n, chosen, k + 1)
        return None

    def done(self, state):
        return state[0] == "end"

    def next_bytes(self, state):
        tag = state[0]
        if tag == "[":
            return (ord("["),)
        if tag == "first":
            return (ord("]"), *self.item.next_bytes(self._item_start(state[1])))
        if tag == "item":
            return self.item.next_bytes(state[3])
        if tag == "sep":
            return (ord("]"), ord(",")) if state[3] == 0 else (_SEPARATOR[state[3]],)
        return ()

    def string_run(self, state):
        return self.item.string_run(state[3]) if state[0] == "item" else None


def _where(path: str) -> str:
    return path or "the schema's root"


def _char_class(body: str, path: str) -> frozenset[int]:
    chars: set[int] = set()
    items = re.findall(r"\\.|.", body)
    i = 0
    while i < len(items):
        first = items[i][-1]
        if i + 2 < len(items) and items[i + 1] == "-":
            last = items[i + 2][-1]
            if ord(last) < ord(first):
                raise SchemaError(f"{_where(path)}: bad range {first}-{last} in pattern")
            chars.update(range(ord(first), ord(last) + 1))
            i += 3
        else:
            chars.add(ord(first))
            i += 1
    if not chars <= PRINTABLE:
        raise SchemaError(f'{_where(path)}: pattern characters must be printable ASCII without `"` or `\\`')
    return frozenset(chars)


def _compile(schema: dict, path: str) -> _Node:
    if not isinstance(schema, dict):
        raise SchemaError(f"{_where(path)}: a schema must be an object")
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            raise SchemaError(f"{_where(path)}: an object needs `properties`")
        if set(schema.get("required", ())) != set(properties) or schema.get("additionalProperties", True) is not False:
            raise SchemaError(f"{_where(path)}: every property must be required and additionalProperties false")
        parts: list[_Node] = []
        for i, (key, sub) in enumerate(properties.items()):
            opener = "{" if i == 0 else ", "
            parts.append(_Literal(f"{opener}{json.dumps(key, ensure_ascii=False)}: ".encode()))
            parts.append(_compile(sub, f"{path}.{key}" if path else key))
        parts.append(_Literal(b"}"))
        return _Sequence(parts)
    if kind == "array":
        if "maxItems" not in schema:
            raise SchemaError(f"{_where(path)}: an array needs `maxItems` (every answer must be bounded)")
        low, high = int(schema.get("minItems", 0)), int(schema["maxItems"])
        if not 0 <= low <= high or high < 1:
            raise SchemaError(f"{_where(path)}: needs 0 <= minItems <= maxItems, maxItems >= 1")
        item = _compile(schema.get("items", {}), f"{path}[]")
        unique = bool(schema.get("uniqueItems", False))
        if unique and not isinstance(item, _Enum):
            raise SchemaError(f"{_where(path)}: uniqueItems is supported for arrays of enum strings only")
        return _Array(item, low, high, unique)
    if kind == "string":
        if "enum" in schema:
            values = schema["enum"]
            if not values or not all(isinstance(v, str) for v in values):
                raise SchemaError(f"{_where(path)}: `enum` must be a non-empty list of strings")
            return _Enum(values)
        if "maxLength" not in schema:
            raise SchemaError(f"{_where(path)}: a free string needs `maxLength` (every answer must be bounded)")
        low, high = int(schema.get("minLength", 0)), int(schema["maxLength"])
        chars = PRINTABLE
        pattern = schema.get("pattern")
        if pattern is not None:
            match = _PATTERN.match(pattern)
            if not match:
                raise SchemaError(
                    f"{_where(path)}: pattern {pattern!r} is not of the form ^[class]+$, ^[class]*$ or ^[first][class]*$"
                )
            first_body, body, repeat = match.groups()
            if first_body is not None and repeat != "*":
                raise SchemaError(f"{_where(path)}: pattern {pattern!r}: after [first] only [class]* is supported")
            first = _char_class(first_body, path) if first_body is not None else None
            chars = _char_class(body, path)
            low = max(low, 1 if (repeat == "+" or first is not None) else 0)
        else:
            first = None
        if not 0 <= low <= high:
            raise SchemaError(f"{_where(path)}: needs 0 <= minLength <= maxLength")
        return _FreeString(first, chars, low, high)
    raise SchemaError(f"{_where(path)}: type {kind!r} is not supported (object, array, string)")


class CompiledSchema:
    """A schema's automaton, with a memo of which byte strings its states accept (the memo of
    allowed tokens is the vocabulary's: one schema may be decoded with several tokenizers)."""

    def __init__(self, schema: dict):
        self.root = _compile(schema, "")
        self.accepts_memo: dict[tuple[object, bytes], bool] = {}

    def start(self):
        return self.root.start()

    def feed(self, state, data: bytes):
        """The state after `data`, or None when the schema does not allow it there."""
        for byte in data:
            if state is None or self.root.done(state):
                return None
            state = self.root.step(state, byte)
        return state

    def accepts(self, state, data: bytes) -> bool:
        key = (state, data)
        if key not in self.accepts_memo:
            self.accepts_memo[key] = self.feed(state, data) is not None
        return self.accepts_memo[key]

    def done(self, state) -> bool:
        return self.root.done(state)

    def matches(self, text: str) -> bool:
        """Whether `text` is a complete answer in this decoder's layout (tests, checks)."""
        state = self.feed(self.start(), text.encode("utf-8"))
        return state is not None and self.done(state)


@lru_cache(maxsize=512)
def _compiled(canonical: str) -> CompiledSchema:
    return CompiledSchema(json.loads(canonical))


def compile_schema(schema: dict) -> CompiledSchema:
    """The automaton of `schema`; equal schemas share one (and its memos). Key order is kept:
    it is the order the properties are written in."""
    return _compiled(json.dumps(schema))


# -- the vocabulary as bytes ------------------------------------------------------------


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-ins for the 256 bytes (byte-level BPE vocabularies), inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes)}


_BYTE_OF = _byte_alphabet()
_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id stands for; None for special tokens (never allowed inside an answer)."""
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    regular = [p for i, p in enumerate(pieces) if i not in special and p]
    byte_level = sum(all(c in _BYTE_OF for c in p) for p in regular) >= 0.99 * max(1, len(regular))
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or not piece:
            out.append(None)
        elif byte_level:
            out.append(bytes(_BYTE_OF[c] for c in piece) if all(c in _BYTE_OF for c in piece) else None)
        else:  # SentencePiece: ▁ is a space, <0xNN> a raw byte
            raw = _SP_BYTE.match(piece)
            out.append(bytes((int(raw.group(1), 16),)) if raw else piece.replace("▁", " ").encode("utf-8"))
    return out


class _TrieNode:
    __slots__ = ("children", "ids")

    def __init__(self):
        self.children: dict[int, _TrieNode] = {}
        self.ids: list[int] = []


@dataclass
class _ClassTable:
    """For one free-string character set (with the set of its first character, at the start
    of a string): each token's length when it is made only of those characters (0 otherwise),
    and the tokens that close the string: continuation after the quote → (ids, characters
    before the quote)."""

    pure_length: torch.Tensor
    closers: dict[bytes, tuple[torch.Tensor, torch.Tensor]]


class TokenVocabulary:
    """A tokenizer's vocabulary as bytes, and the allowed-token masks of schema states."""

    def __init__(self, pieces: Sequence[bytes | None], eos_ids: Sequence[int], size: int | None = None):
        self.size = max(size or 0, len(pieces))
        self.pieces = list(pieces) + [None] * (self.size - len(pieces))
        self.eos_ids = [i for i in eos_ids if 0 <= i < self.size]
        self.eos = torch.tensor(self.eos_ids, dtype=torch.long)
        self.root = _TrieNode()
        for token_id, piece in enumerate(self.pieces):
            if not piece:
                continue
            node = self.root
            for byte in piece:
                node = node.children.setdefault(byte, _TrieNode())
            node.ids.append(token_id)
        self._tables: dict[tuple[frozenset[int] | None, frozenset[int]], _ClassTable] = {}
        # trie-walk results per schema and state; a schema's entry goes when the schema does
        self._walks: weakref.WeakKeyDictionary[CompiledSchema, dict[object, torch.Tensor]] = weakref.WeakKeyDictionary()

    @classmethod
    def from_tokenizer(cls, tokenizer, eos_ids: Sequence[int], size: int | None = None) -> TokenVocabulary:
        return cls(token_bytes(tokenizer), eos_ids, size)

    def _table(self, first: frozenset[int] | None, chars: frozenset[int]) -> _ClassTable:
        key = (first, chars)
        table = self._tables.get(key)
        if table is None:
            pure = torch.zeros(self.size, dtype=torch.long)
            closers: dict[bytes, tuple[list[int], list[int]]] = {}
            for token_id, piece in enumerate(self.pieces):
                if not piece:
                    continue
                k = 0
                while k < len(piece) and piece[k] in (first if k == 0 and first is not None else chars):
                    k += 1
                if k == len(piece):
                    pure[token_id] = k
                elif piece[k] == QUOTE:
                    ids, ks = closers.setdefault(piece[k + 1 :], ([], []))
                    ids.append(token_id)
                    ks.append(k)
            table = _ClassTable(pure, {rest: (torch.tensor(ids), torch.tensor(ks)) for rest, (ids, ks) in closers.items()})
            self._tables[key] = table
        return table

    def allowed(self, schema: CompiledSchema, state) -> torch.Tensor:
        """Boolean mask over the vocabulary: the tokens that may come next in `state`."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        if schema.done(state):
            mask[self.eos] = True
            return mask
        run = schema.root.string_run(state)
        if run is not None:
            node, written = run
            table = self._table(node.first if written == 0 else None, node.chars)
            room = node.max_length - written
            mask |= (table.pure_length > 0) & (table.pure_length <= room)
            # the state after the closing quote does not depend on what the string holds
            padded = schema.feed(state, node.filler(written, max(0, node.min_length - written)) + b'"')
            for rest, (ids, before) in table.closers.items():
                if padded is not None and (not rest or schema.accepts(padded, rest)):
                    length = written + before
                    mask[ids[(length >= node.min_length) & (length <= node.max_length)]] = True
            return mask
        walks = self._walks.setdefault(schema, {})
        ids = walks.get(state)
        if ids is None:
            ids = torch.tensor(self._walk(schema, state), dtype=torch.long)
            walks[state] = ids
        mask[ids] = True
        return mask

    def _walk(self, schema: CompiledSchema, state) -> list[int]:
        root = schema.root
        found: list[int] = []
        stack = [(self.root, state)]
        while stack:
            node, here = stack.pop()
            for byte in set(root.next_bytes(here)):
                child = node.children.get(byte)
                if child is None:
                    continue
                there = root.step(here, byte)
                if there is None:
                    continue
                found.extend(child.ids)
                if child.children and not root.done(there):
                    stack.append((child, there))
        return found


class ConstrainedRow:
    """One answer being decoded under a schema: feed it the tokens chosen, ask what may come next."""

    def __init__(self, vocabulary: TokenVocabulary, schema: CompiledSchema):
        self.vocabulary, self.schema = vocabulary, schema
        self.state = schema.start()
        self.finished = False  # end-of-sequence was chosen (or the row left the schema)

    def advance(self, token_id: int) -> None:
        if self.finished:
            return
        if token_id in self.vocabulary.eos_ids:
            self.finished = True
            return
        piece = self.vocabulary.pieces[token_id] if token_id < self.vocabulary.size else None
        state = self.schema.feed(self.state, piece) if piece else None
        if state is None:  # only a token forced from outside the mask gets here; stop constraining
            self.finished = True
            return
        self.state = state

    def allowed(self) -> torch.Tensor:
        return self.vocabulary.allowed(self.schema, self.state)


class SchemaLogitsProcessor:
    """A `transformers` logits processor: rows with a schema get every token the schema does
    not allow at this step set to -inf; rows without one are left alone. It must run before
    any processor that picks the token."""

    def __init__(self, rows: Sequence[ConstrainedRow | None], prompt_width: int):
        self.rows = list(rows)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids.shape[1] - self.prompt_width
        last = input_ids[:, -1].tolist() if generated > 0 else None
        scores = scores.clone()
        for index, row in enumerate(self.rows):
            if row is None:
                continue
            if last is not None:
                row.advance(last[index])
            if row.finished:
                continue
            allowed = row.allowed()
            width = scores.shape[1]
            if allowed.shape[0] < width:
                allowed = torch.cat([allowed, torch.zeros(width - allowed.shape[0], dtype=torch.bool)])
            if not bool(allowed.any()):  # nothing fits (a vocabulary missing a byte): end the answer
                allowed[row.vocabulary.eos] = True
            scores[index].masked_fill_(~allowed[:width].to(scores.device), float("-inf"))
        return scores
