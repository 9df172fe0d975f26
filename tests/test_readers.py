"""Readers: RecBole atomic, Amazon 2014/2018, MovieLens raw, LLM4DSR window CSVs (fixtures in tmp_path)."""
from __future__ import annotations

import csv
import gzip
import json

import polars as pl
import pytest

from benchmark.data.readers import (
    DataFormatError,
    read_amazon,
    read_atomic,
    read_atomic_items,
    read_llm4dsr_windows,
    read_movielens,
    read_movielens_1m,
    read_movielens_100k,
)


def write(path, text, encoding="utf-8"):
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding=encoding) as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding=encoding)
    return path


def inter_rows(raw):
    return list(zip(raw.inter["user_id"], raw.inter["item_id"], raw.inter["timestamp"]))


# ------------------------------------------------------------------------------ atomic
def test_atomic_reads_suite_format_in_source_order(tmp_path):
    inter = write(tmp_path / "d.inter", "user_id:token\titem_id:token\ttimestamp:float\nu2\ti1\t5\nu1\ti2\t3\nu2\ti2\t1\n")
    item = write(tmp_path / "d.item", "item_id:token\ttitle:token_seq\tcategories:token_seq\ni1\tOne\tA > B\ni2\t\t\n")
    raw = read_atomic(inter, item)
    assert raw.inter.schema == {"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Float64}
    assert inter_rows(raw) == [("u2", "i1", 5.0), ("u1", "i2", 3.0), ("u2", "i2", 1.0)]
    assert raw.items.to_dicts() == [{"item_id": "i1", "title": "One", "categories": "A > B"},
                                    {"item_id": "i2", "title": "", "categories": ""}]


def test_atomic_maps_recbole_field_names_and_drops_rating(tmp_path):
    inter = write(tmp_path / "m.inter.gz", "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n196\t242\t3\t881250949\r\n")
    item = write(tmp_path / "m.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                 "242\tKolya\t1996\tComedy\n")
    raw = read_atomic(inter, item)
    assert raw.inter.columns == ["user_id", "item_id", "timestamp"]
    assert inter_rows(raw) == [("196", "242", 881250949.0)]
    assert raw.items.columns == ["item_id", "title", "release_year", "categories"]
    assert raw.items.row(0) == ("242", "Kolya", "1996", "Comedy")


def test_atomic_without_timestamp_uses_zero(tmp_path):
    raw = read_atomic(write(tmp_path / "d.inter", "user_id:token\titem_id:token\na\tx\na\ty\n"))
    assert raw.inter["timestamp"].to_list() == [0.0, 0.0]
    assert raw.items is None


def test_atomic_wrong_field_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.inter", "user_id:token\titem_id:token\ttimestamp:float\na\tx\t1\nb\ty\n")
    with pytest.raises(DataFormatError) as err:
        read_atomic(path)
    assert str(path) in str(err.value) and "line 3" in str(err.value) and "expected 3" in str(err.value)


def test_atomic_untyped_header_is_rejected(tmp_path):
    path = write(tmp_path / "bad.inter", "user_id\titem_id\na\tx\n")
    with pytest.raises(DataFormatError, match=r"line 1: header field 'user_id' is not 'name:type'"):
        read_atomic(path)


def test_atomic_bad_timestamp_names_line_and_value(tmp_path):
    path = write(tmp_path / "bad.inter", "user_id:token\titem_id:token\ttimestamp:float\na\tx\t1\na\ty\tsoon\n")
    with pytest.raises(DataFormatError, match=r"line 3: timestamp 'soon' is not a finite number"):
        read_atomic(path)


def test_atomic_duplicate_item_id_is_rejected(tmp_path):
    inter = write(tmp_path / "d.inter", "user_id:token\titem_id:token\na\tx\n")
    item = write(tmp_path / "d.item", "item_id:token\ttitle:token_seq\nx\tA\ny\tB\nx\tC\n")
    with pytest.raises(DataFormatError, match=r"line 4: item id 'x' repeats line 2"):
        read_atomic(inter, item)


# ------------------------------------------------------------------------------ Amazon
REVIEWS = [
    {"reviewerID": "U1", "asin": "A1", "unixReviewTime": 1300000000, "overall": 5.0, "helpful": [0, 1], "reviewText": "ok"},
    {"reviewerID": "U2", "asin": "A2", "unixReviewTime": 1200000000, "overall": 1.0, "helpful": [0, 0]},
    {"reviewerID": "U1", "asin": "A2", "unixReviewTime": 1100000000, "overall": 3.0, "style": {"Size:": " L"}},
]


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_amazon_2014_reviews_and_python_literal_metadata(tmp_path, suffix):
    reviews = write(tmp_path / f"reviews_X_5{suffix}", "\n".join(json.dumps(r) for r in REVIEWS) + "\n")
    meta_lines = [
        {"asin": "A1", "title": "Lip\tGloss", "categories": [["Beauty", "Makeup"], ["Sale"]], "related": {"also_bought": ["A2"]}},
        {"asin": "A9", "title": "never reviewed", "categories": [["Beauty"]]},
        {"asin": "A2", "categories": [["Beauty", "Skin"]], "price": 3.5},
    ]
    meta = write(tmp_path / f"meta_X{suffix}", "\n".join(repr(m) for m in meta_lines) + "\n")  # Python literals
    raw = read_amazon(reviews, meta)
    assert inter_rows(raw) == [("U1", "A1", 1.3e9), ("U2", "A2", 1.2e9), ("U1", "A2", 1.1e9)]
    assert raw.items.to_dicts() == [
        {"item_id": "A1", "title": "Lip Gloss", "categories": "Beauty > Makeup | Sale"},
        {"item_id": "A2", "title": "", "categories": "Beauty > Skin"},
    ]


def test_amazon_2018_strict_json_metadata(tmp_path):
    reviews = write(tmp_path / "Video_Games_5.json", "\n".join(json.dumps(r) for r in REVIEWS))
    meta = write(tmp_path / "meta_Video_Games.json.gz",
                 json.dumps({"asin": "A2", "title": "Game", "category": ["Video Games", "PC"]}) + "\n")
    raw = read_amazon(reviews, meta)
    assert raw.items.to_dicts() == [{"item_id": "A2", "title": "Game", "categories": "Video Games > PC"}]


def test_amazon_bad_review_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "reviews.json", json.dumps(REVIEWS[0]) + "\n{not json\n")
    with pytest.raises(DataFormatError) as err:
        read_amazon(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value) and "JSON" in str(err.value)


def test_amazon_review_without_time_names_line(tmp_path):
    path = write(tmp_path / "reviews.json", json.dumps(REVIEWS[0]) + "\n" + json.dumps({"reviewerID": "U", "asin": "A"}) + "\n")
    with pytest.raises(DataFormatError, match=r"line 2: field 'unixReviewTime' is None, expected an integer"):
        read_amazon(path)


def test_amazon_metadata_is_never_evaluated(tmp_path):
    reviews = write(tmp_path / "reviews.json", json.dumps(REVIEWS[0]))
    marker = tmp_path / "pwned"
    meta = write(tmp_path / "meta.json", "{'asin': 'A0', 'title': 'x'}\n"
                 f"{{'asin': 'A1', 'title': __import__('pathlib').Path({str(marker)!r}).touch()}}\n")
    with pytest.raises(DataFormatError, match=r"line 2: cannot parse .* Python dict literal"):
        read_amazon(reviews, meta)
    assert not marker.exists()


# ------------------------------------------------------------------------------ MovieLens
def test_movielens_100k_raw_files(tmp_path):
    data = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    flags = ["0"] * 19
    comedy = flags.copy()
    comedy[5] = "1"
    comedy[8] = "1"
    item = write(tmp_path / "u.item",
                 "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(comedy) + "\n"
                 "302|Caf\u00e9 Society|01-Jan-1997||http://y|" + "|".join(flags) + "\n", encoding="latin-1")
    raw = read_movielens_100k(data, item)
    assert inter_rows(raw) == [("196", "242", 881250949.0), ("186", "302", 891717742.0)]
    assert raw.items.to_dicts() == [
        {"item_id": "242", "title": "Kolya", "release_year": "1996", "categories": "Comedy Drama"},
        {"item_id": "302", "title": "Caf\u00e9 Society", "release_year": "1997", "categories": ""},
    ]
    assert read_movielens(tmp_path).inter.equals(raw.inter)


def test_movielens_1m_raw_files(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(tmp_path / "movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James (1996)::Animation|Children's\n",
          encoding="latin-1")
    raw = read_movielens(tmp_path)
    assert inter_rows(raw) == [("1", "1193", 978300760.0), ("1", "661", 978302109.0)]
    assert raw.items.row(1) == ("661", "James", "1996", "Animation Children's")


def test_movielens_1m_wrong_separator_names_line(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1,661,3,978302109\n")
    with pytest.raises(DataFormatError, match=r"line 2: has 1 fields separated by '::', expected 4"):
        read_movielens_1m(path)


# ------------------------------------------------------------------------- LLM4DSR windows
def llm4dsr_windows(user, items, times):
    """The windows LLM4DSR writes for one user (its generate_noise_data.py logic, restated)."""
    n = len(items)
    return [(user, items[max(0, i - 10): i + 1], times[i]) for i in range(min(10, n - 1), n)]


def write_windows(path, windows, titles, mask=None):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "item_ids", "mask", "item_titles", "replaced_item_titles", "timestamp"])
        for user, items, t in windows:
            marks = mask if mask is not None else [0] * len(items)
            writer.writerow([user, repr(items), repr(marks), repr([titles[i] for i in items]), "[]", t])


def test_llm4dsr_windows_rebuild_full_sequences(tmp_path):
    seqs = {
        7: ([1, 2, 3], [10, 20, 20]),  # short user: a single window
        3: (list(range(100, 125)), [5 * (k // 3) for k in range(25)]),  # ties in time
        12: ([5, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7], list(range(13))),  # repeats
    }
    titles = {i: f"Item \"{i}\", it's" for i in range(200)}
    windows = [w for user, (items, times) in seqs.items() for w in llm4dsr_windows(user, items, times)]
    windows.sort(key=lambda w: w[2])  # LLM4DSR sorts windows by time (stable), then cuts 80/10/10
    cut1, cut2 = int(len(windows) * 0.8), int(len(windows) * 0.9)
    paths = [tmp_path / "train.csv", tmp_path / "valid.csv", tmp_path / "test.csv"]
    for path, part in zip(paths, (windows[:cut1], windows[cut1:cut2], windows[cut2:])):
        write_windows(path, part, titles)
    raw = read_llm4dsr_windows(paths)
    rebuilt = raw.inter.group_by("user_id", maintain_order=True).agg("item_id", "timestamp")
    assert rebuilt["user_id"].to_list() == ["3", "7", "12"]  # numeric user order
    for user, items, stamps in rebuilt.iter_rows():
        assert items == [str(i) for i in seqs[int(user)][0]]
        assert stamps[-1] == seqs[int(user)][1][-1]
    assert raw.items.filter(pl.col("item_id") == "101")["title"].item() == titles[101]


def test_llm4dsr_sampled_windows_are_refused(tmp_path):
    items = list(range(1, 16))
    windows = llm4dsr_windows(1, items, list(range(15)))
    write_windows(tmp_path / "train_5000.csv", windows[:2] + windows[3:], {i: str(i) for i in items})
    with pytest.raises(DataFormatError, match=r"line 4: window of user '1' does not continue"):
        read_llm4dsr_windows([tmp_path / "train_5000.csv"])


def test_llm4dsr_noisy_files_are_refused(tmp_path):
    write_windows(tmp_path / "train.csv", [(1, [1, 2, 3], 0)], {1: "a", 2: "b", 3: "c"}, mask=[0, 1, 0])
    with pytest.raises(DataFormatError, match=r"line 2: the mask column flags injected noise"):
        read_llm4dsr_windows([tmp_path / "train.csv"])


def test_llm4dsr_bad_item_list_names_line(tmp_path):
    (tmp_path / "train.csv").write_text("user_id,item_ids,item_titles,timestamp\n1,\"[1, 2]\",\"['a', 'b']\",5\n2,1 2,\"['a']\",6\n")
    with pytest.raises(DataFormatError, match=r"train.csv, line 3: item_ids '1 2' is not a list literal"):
        read_llm4dsr_windows([tmp_path / "train.csv"])


def test_llm4dsr_titles_must_align_with_item_ids(tmp_path):
    (tmp_path / "train.csv").write_text("user_id,item_ids,item_titles,timestamp\n1,\"[1, 2]\",\"['only one']\",5\n")
    with pytest.raises(DataFormatError, match=r"train.csv, line 2: item_titles has 1 entries, expected one per item id \(2\)"):
        read_llm4dsr_windows([tmp_path / "train.csv"])


def test_atomic_header_only_inter_is_an_error_naming_line_2(tmp_path):
    path = write(tmp_path / "e.inter", "user_id:token\titem_id:token\ttimestamp:float\n")
    with pytest.raises(DataFormatError, match=r"e\.inter, line 2: no interactions; expected one line per interaction"):
        read_atomic(path)


def test_atomic_header_only_item_file_gives_an_empty_items_frame(tmp_path):
    items = read_atomic_items(write(tmp_path / "e.item", "item_id:token\ttitle:token_seq\n"))
    assert items.height == 0 and items.columns == ["item_id", "title"]
