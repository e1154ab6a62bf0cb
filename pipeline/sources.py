"""Readers for the supported source formats, all returning one `RawSource` shape.

Every reader reports malformed input as `SourceError` with the file and line number, and
never evaluates code from a file (Amazon's meta files are Python literals: `ast.literal_eval`).
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
ITEM_TEXT_COLUMNS = ("title", "brand", "categories", "description")
INTERACTION_COLUMNS = ("user_source", "item_source", "rating", "timestamp", "x_label")
ITEM_COLUMNS = ("item_source", "original_id", *ITEM_TEXT_COLUMNS, "image_url", "image_path", "image_status")


class SourceError(ValueError):
    """Input that cannot be ingested; the message says where and why."""


@dataclass
class RawSource:
    """Interactions and item side information as read, before k-core and id remapping.

    interactions: user_source, item_source (str), rating (float|NaN), timestamp (Int64|NA),
                  x_label (Int8|NA: 0 train, 1 valid, 2 test when the source has a split)
    items:        item_source, original_id, title, brand, categories, description,
                  image_url, image_path, image_status ('ok' | 'missing' | 'none')
    users:        user_source, original_id
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    files: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


def read_source(fmt: str, path: Path) -> RawSource:
    path = Path(path)
    if not path.is_dir():
        raise SourceError(f"{path}: dataset folder not found")
    readers = {"mmrec": read_mmrec, "amazon2014": read_amazon2014, "recbole": read_recbole}
    return readers[fmt](path)


# ---------------------------------------------------------------- shared helpers


def _one(path: Path, pattern: str, what: str, required: bool = True) -> Path | None:
    matches = sorted(path.glob(pattern))
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches)
        raise SourceError(f"{path}: expected one {what} ({pattern}), found {len(matches)}: {names}")
    if not matches:
        if required:
            raise SourceError(f"{path}: no {what} found (looked for {pattern})")
        return None
    return matches[0]


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows of a quote-aware delimited file; checks widths.

    A row's line number is the line it starts on: a quoted field may hold line breaks, and an
    unclosed quote swallows the lines after it, so an error names the line where that happened.
    A row equal to the header (a header repeated, e.g. files concatenated) is an error.
    """
    handle = path.open(newline="", encoding="utf-8")
    consumed: list[str] = []  # the physical lines of the record being read

    def lines() -> Iterator[str]:
        for line in handle:
            consumed.append(line)
            yield line

    reader = csv.reader(lines(), delimiter=delimiter)
    separated = "tab" if delimiter == chr(9) else repr(delimiter)
    try:
        header = next(reader)
    except StopIteration:
        handle.close()
        raise SourceError(f"{path}: file is empty (expected a header row)") from None
    except csv.Error as err:
        handle.close()
        raise SourceError(f"{path}:1: {err}") from None

    def rows() -> Iterator[tuple[int, list[str]]]:
        with handle:
            while True:
                consumed.clear()
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise SourceError(f"{path}:{reader.line_num - len(consumed) + 1}: {err}") from None
                first = reader.line_num - len(consumed) + 1
                if not fields:
                    continue
                if len(consumed) > 1 and _unclosed_quote(consumed, delimiter):
                    raise SourceError(
                        f"{path}:{first}: a quoted field opened on this line is never closed "
                        f"(it runs to the end of the file, line {reader.line_num})"
                    )
                if fields == header:
                    raise SourceError(
                        f"{path}:{first}: the header line appears again here (files concatenated?); "
                        "remove it: it would be read as data"
                    )
                if len(fields) != len(header):
                    spans = (
                        f" (this row runs from line {first} to line {reader.line_num}: a quoted field with "
                        "line breaks, or a quote that is not closed)" if len(consumed) > 1 else ""
                    )  # fmt: skip
                    raise SourceError(
                        f"{path}:{first}: expected {len(header)} {separated}-separated fields "
                        f"({', '.join(header)}), got {len(fields)}{spans}"
                    )
                yield first, fields

    return header, rows()


def _unclosed_quote(record_lines: list[str], delimiter: str) -> bool:
    """Whether a record read across several lines ended inside a quoted field (at the end of
    the file: the lenient reader then returns what it has instead of failing)."""
    try:
        for _ in csv.reader(record_lines, delimiter=delimiter, strict=True):
            pass
    except csv.Error as err:
        return "unexpected end of data" in str(err)
    return False


def _require(path: Path, header: list[str], names: tuple[str, ...]) -> None:
    missing = [name for name in names if name not in header]
    if missing:
        raise SourceError(
            f"{path}: missing column(s) {', '.join(missing)}; the header has {', '.join(header)}"
        )


def _int_or_error(value: str, path: Path, line: int, column: str) -> int | None:
    try:
        return int(float(value)) if value.strip() else None
    except ValueError:
        raise SourceError(f"{path}:{line}: column {column}: {value!r} is not a number") from None


def _float_or_none(value, path: Path, line: int, column: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SourceError(f"{path}:{line}: column {column}: {value!r} is not a number") from None


def _interactions_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS))
    return frame.astype(
        {"user_source": "string", "item_source": "string", "rating": "float64",
         "timestamp": "Int64", "x_label": "Int8"}
    )


def _items_frame(records: list[dict], image_dir: Path | None) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=[c for c in ITEM_COLUMNS if c not in ("image_path", "image_status")])
    frame = frame.astype({c: "string" for c in frame.columns})
    frame["image_path"], frame["image_status"] = _locate_images(frame, image_dir)
    return frame.drop_duplicates("item_source", keep="first").reset_index(drop=True)


def _locate_images(items: pd.DataFrame, image_dir: Path | None) -> tuple[pd.Series, pd.Series]:
    """Image file per item by original id (then source id); 'missing' when expected but absent."""
    if image_dir is None or not image_dir.is_dir():
        none = pd.Series(pd.NA, index=items.index, dtype="string")
        return none, pd.Series("none", index=items.index, dtype="string")
    by_stem: dict[str, Path] = {}
    for file in image_dir.iterdir():
        if file.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(file.stem, file.resolve())
    paths = [
        by_stem.get(str(orig)) or by_stem.get(str(src))
        for orig, src in zip(items["original_id"].fillna(""), items["item_source"])
    ]
    path_col = pd.Series([str(p) if p else pd.NA for p in paths], index=items.index, dtype="string")
    status = pd.Series(["ok" if p else "missing" for p in paths], index=items.index, dtype="string")
    return path_col, status


# ---------------------------------------------------------------- MMRec


def read_mmrec(path: Path) -> RawSource:
    """`<name>.inter` (userID itemID [x_label] ...), optional i_id/u_id mappings, items.tsv, images/."""
    inter = _one(path, "*.inter", "interaction file")
    header, rows = _read_delimited(inter, "\t")
    _require(inter, header, ("userID", "itemID"))
    u, i = header.index("userID"), header.index("itemID")
    x = header.index("x_label") if "x_label" in header else None
    r = header.index("rating") if "rating" in header else None
    t = header.index("timestamp") if "timestamp" in header else None
    records = []
    for line, f in rows:
        label = None
        if x is not None:
            label = _int_or_error(f[x], inter, line, "x_label")
            if label not in (0, 1, 2):
                raise SourceError(f"{inter}:{line}: x_label must be 0, 1 or 2, got {f[x]!r}")
        records.append((
            f[u], f[i],
            _float_or_none(f[r], inter, line, "rating") if r is not None else None,
            _int_or_error(f[t], inter, line, "timestamp") if t is not None else None,
            label,
        ))
    interactions = _interactions_frame(records)
    files = [inter.name]

    asin_of = _mapping(path / "i_id_mapping.csv", "itemID", "asin", files)
    reviewer_of = _mapping(path / "u_id_mapping.csv", "userID", "user_id", files)
    image_url_of = {}
    urls = path / "image_urls.csv"
    if urls.exists():
        url_header, url_rows = _read_delimited(urls, ",")
        _require(urls, url_header, ("itemID", "imUrl"))
        ii, ui = url_header.index("itemID"), url_header.index("imUrl")
        image_url_of = {f[ii]: f[ui] for _, f in url_rows}
        files.append(urls.name)

    text_of: dict[str, dict] = {}
    items_tsv = path / "items.tsv"
    if items_tsv.exists():
        text_header, text_rows = _read_delimited(items_tsv, "\t")
        _require(items_tsv, text_header, ("itemID",))
        id_col = text_header.index("itemID")
        wanted = {c: text_header.index(c) for c in ITEM_TEXT_COLUMNS if c in text_header}
        for _, f in text_rows:
            text_of[f[id_col]] = {c: (f[k] or None) for c, k in wanted.items()}
        files.append(items_tsv.name)

    item_ids = interactions["item_source"].unique()
    items = _items_frame(
        [
            {"item_source": s, "original_id": asin_of.get(s, s), **text_of.get(s, {}),
             "image_url": image_url_of.get(s)}
            for s in item_ids
        ],
        path / "images",
    )
    users = _users_frame(interactions, reviewer_of)
    notes = {
        name: str(path / name) for name in ("text_feat.npy", "image_feat.npy") if (path / name).exists()
    }
    files += list(notes)
    return RawSource(interactions, items, users, files, notes)


def _mapping(file: Path, key: str, value: str, files: list[str]) -> dict[str, str]:
    if not file.exists():
        return {}
    header, rows = _read_delimited(file, "\t")
    _require(file, header, (key, value))
    k, v = header.index(key), header.index(value)
    files.append(file.name)
    return {f[k]: f[v] for _, f in rows}


def _users_frame(interactions: pd.DataFrame, original_of: dict[str, str]) -> pd.DataFrame:
    ids = interactions["user_source"].unique()
    return pd.DataFrame(
        {"user_source": ids, "original_id": [original_of.get(s, s) for s in ids]}
    ).astype("string")


# ---------------------------------------------------------------- Amazon 2014 raw


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise SourceError(f"{path}: cannot read: {err}") from None


def read_amazon2014(path: Path) -> RawSource:
    """reviews_<Cat>[_5].json.gz (or ratings_<Cat>.csv) + meta_<Cat>.json.gz + optional images/."""
    reviews = _one(path, "reviews_*.json*", "review file", required=False)
    ratings = _one(path, "ratings_*.csv", "ratings file", required=False)
    if reviews is None and ratings is None:
        raise SourceError(f"{path}: no reviews_<Cat>_5.json.gz or ratings_<Cat>.csv found")
    records = []
    if reviews is not None:
        for line, text in _lines(reviews):
            try:
                review = json.loads(text)
            except json.JSONDecodeError as err:
                raise SourceError(f"{reviews}:{line}: not valid JSON: {err.msg}") from None
            if not isinstance(review, dict) or "reviewerID" not in review or "asin" not in review:
                raise SourceError(f"{reviews}:{line}: a review needs reviewerID and asin")
            records.append((
                str(review["reviewerID"]), str(review["asin"]),
                _float_or_none(review.get("overall"), reviews, line, "overall"),
                _int_or_error(str(review.get("unixReviewTime", "")), reviews, line, "unixReviewTime"),
                None,
            ))
        source_file = reviews
    else:
        for line, text in _lines(ratings):
            fields = next(csv.reader([text]))
            if len(fields) != 4:
                raise SourceError(
                    f"{ratings}:{line}: expected 4 comma-separated fields (user,item,rating,timestamp), got {len(fields)}"
                )
            records.append((
                fields[0], fields[1], _float_or_none(fields[2], ratings, line, "rating"),
                _int_or_error(fields[3], ratings, line, "timestamp"), None,
            ))
        source_file = ratings
    interactions = _interactions_frame(records)
    files = [source_file.name]

    meta = _one(path, "meta_*.json*", "meta file", required=False)
    metadata: dict[str, dict] = {}
    if meta is not None:
        files.append(meta.name)
        for line, text in _lines(meta):
            entry = _literal(text, meta, line)
            if "asin" not in entry:
                raise SourceError(f"{meta}:{line}: a meta entry needs asin")
            metadata[str(entry["asin"])] = entry
    item_ids = interactions["item_source"].unique()
    items = _items_frame([_amazon_item(s, metadata.get(s, {})) for s in item_ids], path / "images")
    return RawSource(interactions, items, _users_frame(interactions, {}), files)


def _literal(text: str, path: Path, line: int) -> dict:
    """One meta line: a Python literal (the 2014 files) or strict JSON; never `eval`."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise SourceError(f"{path}:{line}: not a Python-literal or JSON object") from None
    if not isinstance(value, dict):
        raise SourceError(f"{path}:{line}: expected an object ({{...}}), got {type(value).__name__}")
    return value


def _amazon_item(asin: str, meta: dict) -> dict:
    paths = meta.get("categories") or []
    categories = " | ".join(", ".join(map(str, p)) for p in paths if isinstance(p, list | tuple)) or None
    return {
        "item_source": asin, "original_id": asin,
        "title": _text(meta.get("title")), "brand": _text(meta.get("brand")),
        "categories": categories, "description": _text(meta.get("description")),
        "image_url": _text(meta.get("imUrl")),
    }


def _text(value) -> str | None:
    return str(value).strip() or None if value is not None else None


# ---------------------------------------------------------------- RecBole atomic files


def _recbole_header(path: Path, header: list[str]) -> list[str]:
    names = []
    for column in header:
        name, sep, kind = column.partition(":")
        if not sep or kind not in ("token", "token_seq", "float", "float_seq"):
            raise SourceError(f"{path}: header field {column!r} is not `name:type` (RecBole atomic format)")
        names.append(name)
    return names


def read_recbole(path: Path) -> RawSource:
    """`<name>.inter` (user_id:token item_id:token [rating:float] [timestamp:float]) + optional `.item`."""
    inter = _one(path, "*.inter", "interaction file")
    header, rows = _read_delimited(inter, "\t")
    names = _recbole_header(inter, header)
    _require(inter, names, ("user_id", "item_id"))
    u, i = names.index("user_id"), names.index("item_id")
    r = names.index("rating") if "rating" in names else None
    t = names.index("timestamp") if "timestamp" in names else None
    records = [
        (
            f[u], f[i],
            _float_or_none(f[r], inter, line, "rating") if r is not None else None,
            _int_or_error(f[t], inter, line, "timestamp") if t is not None else None,
            None,
        )
        for line, f in rows
    ]
    interactions = _interactions_frame(records)
    files = [inter.name]

    item_text: dict[str, dict] = {}
    item_file = _one(path, "*.item", "item file", required=False)
    if item_file is not None:
        item_header, item_rows = _read_delimited(item_file, "\t")
        item_names = _recbole_header(item_file, item_header)
        _require(item_file, item_names, ("item_id",))
        for _, f in item_rows:
            item_text[f[item_names.index("item_id")]] = _recbole_item(dict(zip(item_names, f)))
        files.append(item_file.name)
    item_ids = interactions["item_source"].unique()
    items = _items_frame(
        [{"item_source": s, "original_id": s, **item_text.get(s, {})} for s in item_ids],
        path / "images",
    )
    return RawSource(interactions, items, _users_frame(interactions, {}), files)


def _recbole_item(fields: dict[str, str]) -> dict:
    """Map RecBole item fields onto the common text columns; the rest becomes the description."""
    out: dict[str, str | None] = {}
    rest = []
    for name, value in fields.items():
        if name == "item_id" or not value:
            continue
        if "title" in name or name == "name":
            out["title"] = value
        elif name in ("brand", "manufacturer"):
            out["brand"] = value
        elif name in ("class", "genre", "genres", "categories", "category"):
            out["categories"] = ", ".join(value.split())
        elif name == "description":
            out["description"] = value
        else:
            rest.append(f"{name.replace('_', ' ')}: {value}")
    if rest and "description" not in out:
        out["description"] = "; ".join(rest)
    return out
