"""Source readers: each format, and clear errors (file and line) for bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from pipeline.sources import SourceError, read_source


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def gz_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


def test_mmrec_folder_with_mappings_and_quoted_item_text(tmp_path):
    write(tmp_path / "toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\t1\t2\n1\t1\t1\n")
    write(tmp_path / "i_id_mapping.csv", "asin\titemID\nB00A\t0\nB00B\t1\n")
    write(tmp_path / "items.tsv",
          'itemID\tasin\ttitle\tbrand\tcategories\n0\tB00A\t"Soft ""baby"" blanket\twith tab"\tAcme\tBaby, Bedding\n1\tB00B\tBottle\t\tBaby\n')
    source = read_source("mmrec", tmp_path)
    assert source.interactions.x_label.tolist() == [0, 2, 1]
    items = source.items.set_index("item_source")
    assert items.loc["0", "title"] == 'Soft "baby" blanket\twith tab'
    assert items.loc["0", "original_id"] == "B00A"
    assert items.loc["1", "brand"] is None or str(items.loc["1", "brand"]) == "<NA>"
    assert set(source.items.image_status) == {"none"}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("userID\titemID\n0\t1\n0\n", "toy.inter:3: expected 2 tab-separated fields"),
        ("user\titemID\n0\t1\n", "missing column(s) userID"),
        ("userID\titemID\tx_label\n0\t1\t7\n", "toy.inter:2: x_label must be 0, 1 or 2"),
        ("userID\titemID\tx_label\n0\t1\tzero\n", "toy.inter:2: column x_label: 'zero' is not a number"),
        ("", "file is empty"),
    ],
)
def test_mmrec_bad_input_names_file_and_line(tmp_path, content, needle):
    write(tmp_path / "toy.inter", content)
    with pytest.raises(SourceError, match=None) as err:
        read_source("mmrec", tmp_path)
    assert needle in str(err.value)


def test_missing_folder_and_missing_files(tmp_path):
    with pytest.raises(SourceError, match="dataset folder not found"):
        read_source("mmrec", tmp_path / "nope")
    with pytest.raises(SourceError, match=r"no interaction file found \(looked for \*\.inter\)"):
        read_source("mmrec", tmp_path)
    with pytest.raises(SourceError, match="no reviews_<Cat>_5.json.gz or ratings_<Cat>.csv"):
        read_source("amazon2014", tmp_path)


def amazon_folder(tmp_path, meta_lines, review_lines=None):
    reviews = review_lines or [
        json.dumps({"reviewerID": "R1", "asin": "A1", "overall": 5.0, "unixReviewTime": 100}),
        json.dumps({"reviewerID": "R1", "asin": "A2", "overall": 3.0, "unixReviewTime": 200}),
    ]
    gz_lines(tmp_path / "reviews_Toy_5.json.gz", reviews)
    gz_lines(tmp_path / "meta_Toy.json.gz", meta_lines)
    return tmp_path


def test_amazon_meta_is_read_as_python_literals_with_images(tmp_path):
    meta = [
        repr({"asin": "A1", "title": "Red 'Cup'", "brand": "Acme", "categories": [["Home", "Kitchen"], ["Gifts"]],
              "imUrl": "http://x/A1.jpg", "description": None}),
        repr({"asin": "A2", "title": "Mug", "categories": []}),
    ]
    folder = amazon_folder(tmp_path, meta)
    (folder / "images").mkdir()
    (folder / "images" / "A1.jpg").write_bytes(b"\xff\xd8")
    source = read_source("amazon2014", folder)
    items = source.items.set_index("item_source")
    assert items.loc["A1", "title"] == "Red 'Cup'"
    assert items.loc["A1", "categories"] == "Home, Kitchen | Gifts"
    assert items.loc["A1", "image_status"] == "ok" and items.loc["A1", "image_path"].endswith("A1.jpg")
    assert items.loc["A2", "image_status"] == "missing"
    assert source.interactions.rating.tolist() == [5.0, 3.0]
    assert source.interactions.timestamp.tolist() == [100, 200]


def test_amazon_meta_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    folder = amazon_folder(tmp_path / "src", [f"__import__('pathlib').Path({str(marker)!r}).touch()"])
    with pytest.raises(SourceError, match=r"meta_Toy.json.gz:1: not a Python-literal or JSON object"):
        read_source("amazon2014", folder)
    assert not marker.exists()


def test_amazon_malformed_review_line_number(tmp_path):
    folder = amazon_folder(tmp_path, [], [json.dumps({"reviewerID": "R", "asin": "A"}), "{not json"])
    with pytest.raises(SourceError, match=r"reviews_Toy_5.json.gz:2: not valid JSON"):
        read_source("amazon2014", folder)
    folder = amazon_folder(tmp_path / "b", [], [json.dumps({"asin": "A"})])
    with pytest.raises(SourceError, match=r":1: a review needs reviewerID and asin"):
        read_source("amazon2014", folder)


def test_amazon_ratings_csv(tmp_path):
    write(tmp_path / "ratings_Toy.csv", "R1,A1,5.0,100\nR2,A1,4.0,101\n")
    source = read_source("amazon2014", tmp_path)
    assert len(source.interactions) == 2 and source.items.title.isna().all()
    write(tmp_path / "ratings_Toy.csv", "R1,A1,5.0,100\nR2,A1\n")
    with pytest.raises(SourceError, match=r"ratings_Toy.csv:2: expected 4 comma-separated fields"):
        read_source("amazon2014", tmp_path)


def test_recbole_atomic_files(tmp_path):
    write(tmp_path / "m.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t881250949\n")
    write(tmp_path / "m.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n10\tToy Story\t1995\tAnimation Comedy\n")
    source = read_source("recbole", tmp_path)
    item = source.items.iloc[0]
    assert (item.title, item.categories, item.description) == ("Toy Story", "Animation, Comedy", "release year: 1995")
    write(tmp_path / "m.inter", "user_id\titem_id\n1\t10\n")
    with pytest.raises(SourceError, match=r"header field 'user_id' is not `name:type`"):
        read_source("recbole", tmp_path)
